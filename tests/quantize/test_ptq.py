"""Post-training quantization: calibration set rules (fast), PTQ artifacts, int8 vs float, reproducibility."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgedet.errors import ConfigError, DataError


def test_calibration_set_rules(synth):
    from edgedet.quantize.ptq import make_calibration

    logs = []
    with pytest.raises(DataError) as e:
        make_calibration(str(synth), (128, 128), (127,) * 3, (128,) * 3, count=300, batch=16, log=logs.append)
    assert "fewer than the batch of 16" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError):
        make_calibration(str(synth), (128, 128), (127,) * 3, (128,) * 3, count=0)
    cal = make_calibration(str(synth), (128, 128), (127,) * 3, (128,) * 3, count=300, batch=8, log=logs.append)
    assert len(cal) == 12 and all("/train/" in f for f in cal.files)  # the train split only
    assert any("only 12 calibration images" in m for m in logs)  # warns below 100
    a = make_calibration(str(synth), (128, 128), (127,) * 3, (128,) * 3, count=6, seed=0, batch=1, log=logs.append)
    b = make_calibration(str(synth), (128, 128), (127,) * 3, (128,) * 3, count=6, seed=0, batch=1, log=logs.append)
    c = make_calibration(str(synth), (128, 128), (127,) * 3, (128,) * 3, count=6, seed=1, batch=1, log=logs.append)
    assert a.files == b.files and a.sha256 == b.sha256
    assert c.files != a.files and c.sha256 != a.sha256
    x = next(iter(a.arrays()))
    assert x.shape == (1, 128, 128, 3) and x.dtype == np.float32


def test_ptq_refuses_a_qat_run(tmp_path, synth):
    from edgedet.quantize.ptq import ptq

    (tmp_path / "run.json").write_text(json.dumps({"kind": "qat", "model_config": {}}))
    with pytest.raises(ConfigError, match="already a QAT run"):
        ptq(str(tmp_path), str(synth))


@pytest.mark.slow
def test_ptq_int8_tracks_float_and_is_reproducible(float_run, synth, tmp_path):
    from edgedet.quantize.ptq import make_calibration, ptq
    from edgedet.convert.tflite_converter import float_ops, keras_to_tflite
    from edgedet.runtime.metadata import read_metadata
    from edgedet.runs import load_run

    rep = ptq(str(float_run), str(synth), str(tmp_path / "ptq"), modes=["int8", "fp16"], batch=4)
    saved = json.loads((tmp_path / "ptq" / "ptq.json").read_text())
    assert saved["calibration"]["images"] == 12 and saved["calibration"]["seed"] == 0
    int8 = rep["artifacts"]["int8"]
    meta = read_metadata(int8["path"])
    assert meta.calib_sha256 == saved["calibration"]["sha256"] and meta.quantization["io_dtype"] == "uint8"
    cos = int8["cosine"]  # on the 2 held-out val images
    assert min(cos[f"class_p{lv}"] for lv in range(3, 8)) >= 0.98, cos
    assert min(rep["artifacts"]["fp16"]["cosine"].values()) >= 0.999
    # Same seed -> same calibration set -> the same model, byte for byte.
    model, info = load_run(str(float_run))
    cfg = info.config
    blobs = []
    for seed in (3, 3):
        cal = make_calibration(str(synth), (cfg.image_size,) * 2, cfg.mean, cfg.std, count=6, seed=seed, batch=1,
                               log=lambda m: None)
        blobs.append(keras_to_tflite(model, "int8", cal.arrays))
    assert blobs[0] == blobs[1]
    assert float_ops(blobs[0]) == []
