"""The quantization diagnosis: policy and rendering (fast), a real run on the tiny model (slow)."""
from __future__ import annotations

import json

import pytest

from edgedet.errors import ConfigError


def test_selective_fallback_policy():
    from edgedet.quantize.diagnose import selective_policy

    assert selective_policy("tflite", False)["offered"]
    edgetpu = selective_policy("edgetpu", False)
    assert not edgetpu["offered"] and "integer ops only" in edgetpu["reason"]
    assert not selective_policy("tflite", True)["offered"]


def test_unknown_target_is_a_one_line_error(tmp_path):
    from edgedet.quantize.diagnose import diagnose

    with pytest.raises(ConfigError, match="did you mean 'edgetpu'"):
        diagnose(str(tmp_path), str(tmp_path), target="edgetp")


def test_markdown_rendering():
    from edgedet.quantize.diagnose import HEALTHY, to_markdown

    rows = [{"rank": 1, "layer": "block3a_se_reduce", "op": "CONV_2D", "rmse_over_scale": 1.3, "rmse": 0.004,
             "scale": 0.003, "max_abs_error": 0.004, "mean_error": 0.0, "num_elements": 10, "tensor": "m/a;m/b"}]
    d = {"model": "test", "run_kind": "float", "target": "tflite", "healthy_rmse_over_scale": round(HEALTHY, 3),
         "float_AP": 0.5, "int8_AP": 0.45, "selective_AP": 0.49, "ap_drop": 0.05, "recovered_AP": 0.04,
         "ap_split": "test", "ap_images": 2, "selective": {"offered": True, "reason": "", "denylist": ["m/a;m/b"]},
         "layers": rows, "all_layers": rows, "outputs": {"class_p3": 0.99}, "float_ops": []}
    md = to_markdown(d)
    assert "| int8, 1 worst tensors in float | 0.4900 |" in md
    assert "`block3a_se_reduce`" in md and "None: the model is full-integer." in md


@pytest.mark.slow
def test_diagnose_float_run(float_run, synth, tmp_path):
    from edgedet.quantize.diagnose import HEALTHY, diagnose
    from edgedet.runtime.report.layers import load_diagnosis

    out = tmp_path / "diag"
    d = diagnose(str(float_run), str(synth), str(out), count=12, batch=4, debug_images=4, eval_limit=2,
                 log=lambda m: None)
    saved = json.loads((out / "diagnosis.json").read_text())
    assert saved["kind"] == "edgedet-quant-diagnosis" and (out / "diagnosis.md").read_text().startswith("# Quant")
    rows = saved["all_layers"]
    assert len(rows) > 100 and len(saved["layers"]) == 10  # every quantized tensor; ten worst up front
    scores = [r["rmse_over_scale"] for r in rows]
    assert scores == sorted(scores, reverse=True) and all(s >= 0 for s in scores)
    assert 0.1 < sorted(scores)[len(scores) // 2] < 3 * HEALTHY  # typical tensor: rounding noise
    assert saved["float_ops"] == []
    assert set(saved["outputs"]) == {f"{k}_p{lv}" for k in ("class", "box") for lv in range(3, 8)}
    assert saved["float_AP"] is not None and saved["int8_AP"] is not None and saved["ap_images"] == 2
    sel = saved["selective"]
    assert sel["offered"]
    if sel["denylist"]:  # the worst tensors in float: a model with float ops, evaluated and written
        assert saved["selective_AP"] is not None and set(sel["denylist"]) <= {r["tensor"] for r in rows[:10]}
        from edgedet.runtime.metadata import read_metadata

        meta = read_metadata(sel["path"])
        budget = meta.quantization["budget"]
        assert budget["float_tensors"] == sel["denylist"] and len(budget["float_layers"]) == len(sel["denylist"])
        assert budget["AP"] == pytest.approx(100 * saved["selective_AP"], abs=1e-3)
        assert meta.quantization["input"]["dtype"] == "uint8" and meta.quantization["float_ops"]
    section = load_diagnosis(str(out / "diagnosis.json"))  # what the report stage embeds
    if isinstance(section, tuple):  # (section, why not)
        section = section[0]
    assert section and len(section["rows"]) == 10 and "rmse_over_scale" in section["columns"]
    assert d["layers"] == saved["layers"]
