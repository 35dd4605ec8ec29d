"""The quick preset's int8 on a small one-class dataset: never below post-training int8, within 0.5 AP of float.

A short QAT fine-tune on ~150 images can end below post-training quantization of the same float
model. QAT therefore keeps its calibrated starting point unless an epoch beats it, and the
pipeline ships, per int8 target, whichever of QAT and PTQ has the higher validation AP.
This runs `edgedet pipeline --preset quick` as a user would on such a set (200 synthetic
images of one shape: 150 train, 25 val, 25 test), restricted to the two int8 targets.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

ENV = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")


def _edgedet(*args) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "edgedet", *map(str, args)], env=ENV, capture_output=True, text=True,
                       timeout=1800)
    assert r.returncode in (0, 1), r.stdout[-3000:] + r.stderr[-3000:]
    return r


def test_quick_preset_int8_on_one_class(tmp_path):
    data, run = tmp_path / "circles", tmp_path / "run"
    _edgedet("data", "synth", data, "--num-images", 200, "--classes", "circle")
    _edgedet("pipeline", "--data", data, "--preset", "quick", "--targets", "tflite-int8,openvino-int8", "--out", run)
    float_val = 100 * json.loads((run / "2_train" / "run.json").read_text())["best"]["metrics"]["AP"]
    assert float_val > 30, float_val  # a model worth quantizing
    qat = json.loads((run / "3_qat" / "run.json").read_text())
    assert qat["best"]["epoch"] in (0, 1)  # 0: the calibrated start beat the fine-tune
    choice = json.loads((run / "4_convert" / "int8" / "choice.json").read_text())
    assert set(choice["targets"]) == {"lite0_tflite-int8.tflite", "lite0_openvino-int8"}
    for name, c in choice["targets"].items():
        ap = c["AP"]
        shipped = ap[c["shipped"]]
        assert shipped == max(ap["qat"], ap["ptq"]), (name, c)  # never below PTQ
        assert shipped >= float_val - 0.5, (name, c, float_val)  # within 0.5 AP of float (val split)
        assert (run / "4_convert" / "int8" / name).exists()
    report = json.loads((run / "5_validate" / "report.json").read_text())
    int8 = [m for m in report["models"] if m.get("target") in ("tflite-int8", "openvino-int8")]
    assert len(int8) == 2 and all(m["status"] in ("pass", "miss") for m in int8)
