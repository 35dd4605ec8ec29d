"""Every target converts the tiny run; each file carries metadata, matches Keras and runs in the runtime."""
from __future__ import annotations

import os

import numpy as np
import pytest

from edgedet.runtime.metadata import read_metadata

pytestmark = [pytest.mark.slow, pytest.mark.shared]

NAMES = [f"class_p{i}" for i in range(3, 8)] + [f"box_p{i}" for i in range(3, 8)]


def _rel(a, b) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def _cos(a, b) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_all_targets_written(exports, cv):
    assert sorted(exports["paths"]) == sorted(cv.ALL_TARGETS)
    out = exports["out"]
    # only the artifacts, no leftovers from temporary files/folders
    assert sorted(os.listdir(out)) == sorted(os.path.basename(p) for p in exports["paths"].values())
    assert os.path.isfile(os.path.join(exports["paths"]["openvino-fp32"], "test-lite.xml"))
    # one log line per stage with time and size
    assert any(line.startswith("calibration") for line in exports["log"])
    for t in cv.ALL_TARGETS:
        line = next(ln for ln in exports["log"] if ln.startswith(t + " "))
        assert " s " in line and ("MB" in line or "kB" in line)


def test_metadata_in_every_artifact(exports, tiny_run, cv):
    import json

    run = json.loads((tiny_run / "run.json").read_text())
    for target, path in exports["paths"].items():
        m = read_metadata(path)
        assert m is not None, target
        assert m.target == target
        assert m.labels == cv.LABELS and tuple(m.input_size) == (cv.SIZE, cv.SIZE)
        assert m.layout == "NHWC" and m.mean == (127.0,) * 3 and m.std == (128.0,) * 3
        assert m.anchors["anchor_scale"] == 3.0 and m.outputs == "raw" and m.output_names == NAMES
        assert m.source_sha256 == run["weights_sha256"]
        assert m.baseline == {"AP": 0.25, "AP50": 0.5}
        assert m.macs and m.macs > 0
        q = m.quantization
        if target in ("tflite-int8", "edgetpu", "onnx-int8", "openvino-int8"):
            assert q["method"] in ("ptq", "nncf-ptq"), (target, q)
            assert len(m.calib_sha256) == 64 and q["calibration"]["images"] == 24
        else:
            assert m.calib_sha256 == ""
    assert read_metadata(exports["paths"]["openvino-int8"]).quantization["method"] == "nncf-ptq"
    q = read_metadata(exports["paths"]["tflite-int8"]).quantization
    assert q["io_dtype"] == "uint8" and q["input"]["dtype"] == "uint8" and q["per_channel_weights"]
    assert q["float_ops"] == [] and q["dequantize_ops"] == 0
    assert read_metadata(exports["paths"]["edgetpu"]).extra["edgetpu"]["mappable_pct"] == 100.0


def test_float_parity(exports, tiny_run, bccd_images, cv):
    x = cv.normalised(bccd_images[0])
    ref = cv.keras_outputs(tiny_run, x)
    for target in ("tflite-fp32", "onnx", "openvino-fp32"):
        got = cv.run_raw(exports["paths"][target], x)
        for name, g, r in zip(NAMES, got, ref):
            assert g.shape == r.shape, (target, name)
            assert _rel(g, r) <= 1e-4, (target, name, _rel(g, r))
    for target in ("tflite-fp16", "openvino-fp16", "tflite-dynamic"):
        got = cv.run_raw(exports["paths"][target], x)
        assert min(_cos(g, r) for g, r in zip(got, ref)) >= 0.99, target


def test_int8_parity(exports, tiny_run, bccd_images, cv):
    from edgedet.runtime.anchors import generate_anchors
    from edgedet.runtime.boxes import decode, iou_matrix

    anchors = generate_anchors(cv.SIZE, read_metadata(exports["paths"]["tflite-int8"]).anchor_config).center
    for target in ("tflite-int8", "onnx-int8", "openvino-int8"):
        for img in bccd_images[:2]:
            x = cv.normalised(img)
            ref = cv.keras_outputs(tiny_run, x)
            got = cv.run_raw(exports["paths"][target], x)
            cls_r = np.concatenate([r.reshape(-1, 3) for r in ref[:5]])
            cls_g = np.concatenate([g.reshape(-1, 3) for g in got[:5]])
            assert _cos(cls_g, cls_r) >= 0.98, (target, _cos(cls_g, cls_r))
            box_r = np.concatenate([r.reshape(-1, 4) for r in ref[5:]])
            box_g = np.concatenate([g.reshape(-1, 4) for g in got[5:]])
            top = np.argsort(-cls_r.max(axis=1))[:20]
            ious = np.diag(iou_matrix(decode(box_r[top], anchors[top]), decode(box_g[top], anchors[top])))
            assert ious.min() >= 0.9, (target, ious.min())


def test_runtime_runs_every_artifact(exports, bccd_images, cv):
    from edgedet.runtime import Detector

    for target, path in exports["paths"].items():
        det = Detector.from_file(path, score_threshold=0.05)
        dets = det.detect(bccd_images[0])
        assert det.labels == tuple(cv.LABELS), target
        assert len(dets.scores) > 0, target
        assert dets.boxes.shape[1] == 4 and np.all(dets.scores >= 0.05)


def test_edgetpu_check_on_export(exports):
    from edgedet.convert.edgetpu import check_edgetpu

    rep = check_edgetpu(exports["paths"]["edgetpu"])
    assert rep.mappable_pct == 100.0 and rep.first_unmapped is None and not rep.model_errors
    fp = check_edgetpu(exports["paths"]["tflite-fp32"])
    assert fp.mappable_pct == 0.0 and fp.first_unmapped.index == 0
    assert any("float32" in e for e in fp.model_errors)
