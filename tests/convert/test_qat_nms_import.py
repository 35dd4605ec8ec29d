"""QAT runs, --nms and --from ONNX (onnx2tf), each on the tiny run."""
from __future__ import annotations

import numpy as np
import pytest

from edgedet.runtime.metadata import read_metadata

pytestmark = [pytest.mark.slow, pytest.mark.shared]


def _cos(a, b) -> float:
    a = np.concatenate([v.ravel() for v in a]).astype(np.float64)
    b = np.concatenate([v.ravel() for v in b]).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def qat_exports(qat_run, tmp_path_factory):
    from edgedet.convert.api import convert

    root = tmp_path_factory.mktemp("qat")
    qrun = qat_run
    arts, source = convert(["tflite-int8", "onnx-int8", "openvino-int8"], weights=str(qrun), out_dir=str(root / "out"), log=lambda m: None)
    return qrun, {a.target: a.path for a in arts}, source.model()


def test_qat_run_converts_without_calibration(qat_exports, bccd_images, cv):
    from edgedet.runtime import Detector

    qrun, paths, model = qat_exports  # model: the QAT Keras model the exports came from
    x = cv.normalised(bccd_images[0])
    ref = [o.numpy() for o in model(x, training=False)]
    for target, path in paths.items():
        m = read_metadata(path)
        assert m.quantization["method"] == "qat" and m.calib_sha256 == "", target
        got = cv.run_raw(path, x)
        # the converted int8 models track the QAT model's fake-quant simulation
        assert _cos(got[:5], ref[:5]) >= (0.95 if target == "tflite-int8" else 0.99), target
        assert _cos(got[5:], ref[5:]) >= 0.99, target
        det = Detector.from_file(path, score_threshold=0.05)
        assert len(det.detect(bccd_images[0]).scores) > 0
    q = read_metadata(paths["tflite-int8"]).quantization
    assert q["float_ops"] == [] and q["input"]["dtype"] == "uint8"
    assert read_metadata(paths["onnx-int8"]).quantization["quantized_convs"] > 0
    # the suggested validate line compares against the float run the QAT run came from
    import json
    import types

    from edgedet.convert.api import validate_command

    float_run = json.loads((qrun / "run.json").read_text())["source_run"]
    line = validate_command([], types.SimpleNamespace(kind="qat", path=str(qrun), dataset="D"))
    assert f"--baseline {float_run} " in line and str(qrun) not in line


def test_float_target_from_qat_run_is_a_clear_error(qat_exports, tmp_path):
    from edgedet.convert.api import convert
    from edgedet.errors import ConfigError

    qrun = qat_exports[0]
    with pytest.raises(ConfigError, match="float run"):  # checked before anything loads
        convert(["onnx"], weights=str(qrun), out_dir=str(tmp_path), log=lambda m: None)
    assert list(tmp_path.iterdir()) == []


def test_nms_tflite_matches_runtime_decoding(tiny_run, exports, bccd_images, tmp_path, cv):
    """--nms: the in-graph TFLite_Detection_PostProcess gives the runtime's boxes for the same model."""
    from edgedet.convert.api import convert
    from edgedet.convert.tflite_inspect import read_graph
    from edgedet.runtime import Detector
    from edgedet.runtime.boxes import iou_matrix

    (art,), _ = convert(["tflite-fp32"], weights=str(tiny_run), nms=True, out_dir=str(tmp_path), log=lambda m: None)
    g = read_graph(art.path)
    assert "TFLite_Detection_PostProcess" in g.op_counts()
    assert [t.name for t in g.outputs] == ["detection_boxes", "detection_classes", "detection_scores", "num_detections"]
    meta = read_metadata(art.path)
    assert meta.outputs == "nms" and meta.extra["nms"]["max_detections"] == 100
    assert meta.extra["nms"]["per_class"] is False
    nms_det = Detector.from_file(art.path, score_threshold=0.3)
    # TFLite's quick NMS keeps the best class per anchor and suppresses across classes: global NMS.
    # --nms-per-class runs its regular NMS, one suppression per class: the runtime's default.
    (art_pc,), _ = convert(["tflite-fp32"], weights=str(tiny_run), nms=True, nms_per_class=True,
                           out_dir=str(tmp_path / "pc"), log=lambda m: None)
    assert read_metadata(art_pc.path).extra["nms"]["per_class"] is True
    pairs = [(nms_det, Detector.from_file(exports["paths"]["tflite-fp32"], score_threshold=0.3, nms="global")),
             (Detector.from_file(art_pc.path, score_threshold=0.3),
              Detector.from_file(exports["paths"]["tflite-fp32"], score_threshold=0.3))]
    for in_graph, raw_det in pairs:
        for img in bccd_images[:2]:
            a, b = in_graph.detect(img), raw_det.detect(img)
            assert len(a.scores) > 0
            k = min(len(a.scores), len(b.scores), 10)
            np.testing.assert_allclose(a.scores[:k], b.scores[:k], atol=1e-4)
            np.testing.assert_array_equal(a.classes[:k], b.classes[:k])
            assert np.diag(iou_matrix(a.boxes[:k], b.boxes[:k])).min() >= 0.99
    # --nms-score bakes the threshold in: one between the 3rd and 4th score leaves 3 detections.
    # (Slots past num_detections hold leftovers, not zeros: apps must read the count.)
    from ai_edge_litert.interpreter import Interpreter

    ref = nms_det.detect(bccd_images[0])
    thr = float(ref.scores[2] + ref.scores[3]) / 2
    (art3,), _ = convert(["tflite-fp32"], weights=str(tiny_run), nms=True, nms_score=thr, out_dir=str(tmp_path / "t"),
                         log=lambda m: None)
    assert read_metadata(art3.path).extra["nms"]["score_threshold"] == thr
    it = Interpreter(model_path=art3.path)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], nms_det.preprocess(bccd_images[0])[0])
    it.invoke()
    out = {o["name"]: it.get_tensor(o["index"]) for o in it.get_output_details()}
    n = int(out["num_detections"].reshape(-1)[0])
    scores = out["detection_scores"].reshape(-1)
    assert n == 3
    np.testing.assert_allclose(np.sort(scores[:n])[::-1], ref.scores[:3], atol=1e-6)


def test_from_onnx_to_tflite_matches_its_source(exports, bccd_images, calib_dir, tmp_path, cv):
    """--from: our own ONNX export -> onnx2tf -> tflite-fp32 and (calibrated) tflite-int8."""
    import shutil

    from edgedet.convert.api import convert, validate_command

    src = tmp_path / "model.onnx"
    shutil.copyfile(exports["paths"]["onnx"], src)
    before = src.read_bytes()
    arts, source = convert(["tflite-fp32", "tflite-int8"], from_onnx=str(src), calib_data=calib_dir, calib_count=8,
                           out_dir=str(tmp_path / "out"), log=lambda m: None)
    assert src.read_bytes() == before  # onnx2tf works on a copy: the user's file is never rewritten
    paths = {a.target: a.path for a in arts}
    assert paths["tflite-fp32"].endswith("model_tflite-fp32.tflite")
    x = cv.normalised(bccd_images[0])
    ref = cv.run_raw(str(src), x)
    got = cv.run_raw(paths["tflite-fp32"], x)
    for g, r in zip(got, ref):
        assert g.shape == r.shape
        assert np.max(np.abs(g - r)) <= 1e-4 * max(np.max(np.abs(r)), 1.0)
    assert _cos(cv.run_raw(paths["tflite-int8"], x)[:5], ref[:5]) >= 0.98
    m = read_metadata(paths["tflite-int8"])
    assert m.labels == cv.LABELS and m.quantization["method"] == "ptq" and m.extra["source"]["onnx"] == str(src)
    from edgedet.convert.tflite_metadata import mediapipe_metadata
    from edgedet.runtime.tflite_standard import read_standard

    if mediapipe_metadata() is not None:  # the standard metadata survives --from as well
        std = read_standard(paths["tflite-int8"])
        assert std.label_file == "labels.txt" and std.mean == (127.0,) * 3 and std.output_names[0] == "class_p3"
    assert "--models" in validate_command(arts, source)


def test_onnx2tf_failure_is_one_line(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from edgedet.convert.api import convert
    from edgedet.errors import ToolchainError

    # An op from a custom domain: valid ONNX, nothing onnx2tf can map.
    node = helper.make_node("FancyDetector", ["image"], ["class_p3"], domain="com.example")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 64, 64, 3])],
                              [helper.make_tensor_value_info("class_p3", TensorProto.FLOAT, [1, 8, 8, 27])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    bad = tmp_path / "bad.onnx"
    onnx.save(model, bad)
    from edgedet.runtime.metadata import ModelMeta

    meta = ModelMeta(labels=["a", "b", "c"], input_size=(64, 64))
    from edgedet.convert.onnx_export import write_onnx_meta

    write_onnx_meta(str(bad), str(bad), meta)
    out = tmp_path / "out"
    with pytest.raises(ToolchainError) as e:
        convert(["tflite-fp32"], from_onnx=str(bad), out_dir=str(out), log=lambda m: None)
    msg = str(e.value)
    assert "onnx2tf could not convert" in msg and "\n" not in msg
    assert not out.exists() or list(out.iterdir()) == []
