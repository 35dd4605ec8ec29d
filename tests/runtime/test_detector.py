"""Detector on real exported files: parity with Keras, int8, batching, bad inputs, delegates."""
from __future__ import annotations

import numpy as np
import pytest

from edgedet.errors import ConfigError, DataError, ModelFileError, ToolchainError
from edgedet.runtime.detector import Detector

pytestmark = pytest.mark.slow  # the session fixture exports TFLite/ONNX/OpenVINO files


def assert_same_detections(got, want, atol_px: float = 1.0):
    """Same boxes (within ``atol_px``), classes and ~scores after NMS, in the same order."""
    assert len(got) == len(want) > 0, (len(got), len(want))
    np.testing.assert_array_equal(got.classes, want.classes)
    np.testing.assert_allclose(got.boxes, want.boxes, atol=atol_px)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-3)


@pytest.mark.parametrize("fmt", ["tflite-fp32", "onnx", "openvino"])
def test_float_runtimes_match_keras(rt_models, rt_image, fmt):
    path = {"tflite-fp32": lambda: rt_models.tflite("fp32"), "onnx": rt_models.onnx, "openvino": rt_models.openvino}[fmt]()
    det = Detector.from_file(path, score_threshold=0.3)
    assert det.labels == ("red", "white", "platelet")
    got = det.detect(rt_image)
    want = rt_models.keras_detections(rt_image, score_threshold=0.3)
    assert_same_detections(got, want)
    # boxes live in the original image (320x240), not the 128 px network input
    assert got.boxes[:, 2].max() > 128 and got.boxes.max() <= 320
    t = det.last_timing
    assert set(t) == {"pre", "invoke", "post"} and all(v > 0 for v in t.values())
    info = det.describe()
    assert info["backend"] in ("litert", "onnxruntime", "openvino") and info["device"]


def test_int8_tflite_thresholds_on_quantised_outputs(rt_models, rt_image):
    """The int8 path (quantised input, thresholds on quantised logits, per-level dequantised
    survivors) equals dequantising every output and post-processing in float."""
    from edgedet.runtime.postprocess import postprocess, to_original

    det = Detector.from_file(rt_models.tflite("int8"), score_threshold=0.3)
    assert det.input.dtype == np.int8 and det.input.lut is not None  # the file's uint8 input, its QUANTIZE dropped
    assert det._raw.class_quant is not None and all(q for q in det._raw.class_quant)
    got = det.detect(rt_image)
    assert len(got) > 0
    x, scales, hw = det.preprocess(rt_image)
    outs = det.infer(x)
    specs = det.backend.outputs
    deq = [(o.astype(np.float32) - specs[i].quant[1]) * specs[i].quant[0] for i, o in enumerate(outs)]
    cls, box = det._raw.split(deq)
    want = to_original(postprocess(cls, box, det.anchors, 0.3, labels=det.labels), scales, hw)
    assert_same_detections(got, want, atol_px=1e-3)


def test_uint8_boundary_conversions_are_dropped_exactly_on_cpu(rt_models, rt_image):
    """On CPU the runtime feeds and reads the int8 tensors behind a uint8-I/O file's input and
    outputs (the uint8 <-> int8 QUANTIZE ops run outside XNNPACK); the values are the file's own,
    shifted by 128."""
    from ai_edge_litert.interpreter import Interpreter

    from edgedet.runtime.backends.tflite_io import strip_type_flips

    path = rt_models.tflite("int8")
    det = Detector.from_file(path)
    be = det.backend
    assert be.boundary_ops_removed == len(be.outputs) + 1 == 11
    assert be.describe()["boundary_ops_removed"] == 11
    assert all(o.dtype == np.int8 for o in be.outputs) and be.inputs[0].dtype == np.int8
    x, _, _ = det.preprocess(rt_image)
    as_stored = Detector(type(be)(path, strip_boundary=False), det.meta, path=path)
    assert as_stored.backend.boundary_ops_removed == 0 and as_stored.input.dtype == np.uint8
    x_file, _, _ = as_stored.preprocess(rt_image)
    np.testing.assert_array_equal(x.astype(np.int16) + 128, x_file)
    ours = dict(zip((o.name for o in be.outputs), det.infer(x)))
    it = Interpreter(model_path=path)  # the file as stored: uint8 input and outputs
    it.allocate_tensors()
    d_in = it.get_input_details()[0]
    assert d_in["dtype"] == np.uint8 and d_in["name"] == be.inputs[0].name
    assert be.inputs[0].quant[1] == d_in["quantization"][1] - 128
    it.set_tensor(d_in["index"], x_file)
    it.invoke()
    for d in it.get_output_details():
        assert d["dtype"] == np.uint8
        spec = next(o for o in be.outputs if o.name == d["name"])
        assert spec.quant[0] == pytest.approx(d["quantization"][0]) and spec.quant[1] == d["quantization"][1] - 128
        np.testing.assert_array_equal(ours[d["name"]].astype(np.int16) + 128, it.get_tensor(d["index"]))
    assert_same_detections(as_stored.detect(rt_image), det.detect(rt_image), atol_px=0.0)
    with open(rt_models.tflite("fp32"), "rb") as f:
        assert strip_type_flips(f.read()) is None  # nothing to strip in a float model
    assert Detector.from_file(rt_models.tflite("fp32")).backend.boundary_ops_removed == 0


def test_detect_batch_and_paths(rt_models, rt_image, tmp_path):
    from PIL import Image

    det = Detector.from_file(rt_models.tflite("fp32"))
    p = tmp_path / "img.png"
    Image.fromarray(rt_image).save(p)
    flipped = np.ascontiguousarray(rt_image[:, ::-1])
    batch = det.detect_batch([str(p), flipped])
    for got, want in zip(batch, [det.detect(rt_image), det.detect(flipped)]):
        assert_same_detections(got, want, atol_px=1e-3)
    assert det.detect_batch([]) == []


def test_model_without_metadata_needs_flags(rt_models, rt_image, tmp_path):
    from edgedet.convert.tflite_converter import keras_to_tflite
    from edgedet.runtime.metadata import read_metadata

    src = rt_models.tflite("fp32")
    bare = tmp_path / "bare.tflite"  # the converter's bytes: neither standard nor edgedet metadata
    bare.write_bytes(keras_to_tflite(rt_models.keras, "fp32"))
    assert read_metadata(str(bare)) is None
    with pytest.raises(ModelFileError, match=r"no edgedet metadata.*--labels, --image-size, --mean, --std, --anchor-scale"):
        Detector.from_file(bare)
    labels = tmp_path / "labels.txt"
    labels.write_text("red\nwhite\nplatelet\n")
    meta = Detector.from_file(src).meta
    scale = meta.anchor_config.anchor_scale
    det = Detector.from_file(bare, labels=str(labels), image_size=128, mean=meta.mean, std=meta.std, anchor_scale=scale)
    want = Detector.from_file(src).detect(rt_image)
    assert_same_detections(det.detect(rt_image), want, atol_px=1e-3)
    # the other family's anchor size decodes other boxes: why it is required, never assumed
    other = Detector.from_file(bare, labels=str(labels), image_size=128, mean=meta.mean, std=meta.std, anchor_scale=7 - scale)
    assert len(want) and not np.allclose(other.detect(rt_image).boxes, want.boxes, atol=1.0)
    with pytest.raises(ConfigError, match="take 1 value or 3.*got 2"):
        Detector.from_file(bare, labels=str(labels), image_size=128, mean=[127, 1], std=meta.std, anchor_scale=scale)
    two = tmp_path / "two.txt"
    two.write_text("a\nb\n")
    with pytest.raises(ConfigError, match=r"two.txt: 2 names, but .* has 3 classes"):
        Detector.from_file(src, labels=str(two))


def test_bad_model_files(rt_models, tmp_path):
    data = open(rt_models.tflite("fp32"), "rb").read()
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelFileError, match="cut.tflite") as e:
        Detector.from_file(cut)
    assert "\n" not in str(e.value)
    tail_cut = tmp_path / "tailcut.tflite"
    tail_cut.write_bytes(data[:-40])  # the metadata zip's directory is gone
    with pytest.raises(ModelFileError, match="truncated"):
        Detector.from_file(tail_cut)
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ModelFileError, match="not a TFLite model"):
        Detector.from_file(junk)
    weird = tmp_path / "model.pb"
    weird.write_bytes(b"x")
    with pytest.raises(ModelFileError, match="unknown model suffix"):
        Detector.from_file(weird)
    with pytest.raises(ModelFileError, match="no such model file"):
        Detector.from_file(tmp_path / "missing.tflite")
    onnx_cut = tmp_path / "cut.onnx"
    onnx_cut.write_bytes(open(rt_models.onnx(), "rb").read()[:1000])
    with pytest.raises(ModelFileError, match="cut.onnx"):
        Detector.from_file(onnx_cut)


def test_bad_images(rt_models, tmp_path):
    det = Detector.from_file(rt_models.tflite("fp32"))
    txt = tmp_path / "readme.jpg"
    txt.write_text("hello")
    with pytest.raises(DataError, match="readme.jpg"):
        det.detect(str(txt))
    with pytest.raises(DataError):
        det.detect(np.zeros((10, 10, 5), np.uint8))


def _edgetpu_copy(src: str, dst, compiled: bool) -> str:
    """``src`` with its metadata saying what ``edgetpu_compiler`` did; ``compiled`` files also carry
    the name of the Edge TPU custom op after the flatbuffer (what the compiler's output contains)."""
    from edgedet.runtime.metadata import _model_length, embed_tflite, read_metadata

    data = open(src, "rb").read()
    meta = read_metadata(src)
    meta.extra["edgetpu"] = {"compiled": compiled}
    dst.write_bytes(data[: _model_length(data)] + (b"edgetpu-custom-op" if compiled else b""))
    embed_tflite(str(dst), meta)
    return str(dst)


def test_delegate_failure_is_loud_and_fallback_is_explicit(rt_models, capsys, tmp_path):
    path = rt_models.tflite("fp32")
    compiled = _edgetpu_copy(path, tmp_path / "m_edgetpu.tflite", compiled=True)
    for dev in ("usb:0", "pci:0", "edgetpu"):
        with pytest.raises(ToolchainError, match=r"libedgetpu\.so\.1.*install") as e:
            Detector.from_file(compiled, device=dev)
        assert "\n" not in str(e.value)
    with pytest.raises(ToolchainError, match="nnapi delegate could not be loaded.*install"):
        Detector.from_file(path, device="nnapi")
    with pytest.raises(ToolchainError, match="libedgetpu"):
        Detector.from_file(compiled, device="coral-usb")  # a device profile name
    det = Detector.from_file(compiled, device="usb:0", fallback="cpu")
    assert det.backend.device == "CPU (fallback from edgetpu:usb:0)" and det.backend.delegate is None
    assert "running on CPU (--fallback cpu)" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown LiteRT device"):
        Detector.from_file(path, device="tpu9")
    with pytest.raises(ConfigError, match="intel-gpu.*openvino"):
        Detector.from_file(path, device="intel-gpu")
    det = Detector.from_file(path, device="raspberry-pi-5")  # CPU profile: XNNPACK, 4 threads
    assert det.backend.threads == 4


def test_openvino_device_selection(rt_models):
    import openvino as ov

    path = rt_models.openvino()
    det = Detector.from_file(path, device="CPU", threads=1)
    assert "CPU" in det.backend.device
    auto = Detector.from_file(path, device="AUTO")
    assert auto.backend.device  # the device AUTO actually picked (EXECUTION_DEVICES)
    if "NPU" not in ov.Core().available_devices:
        with pytest.raises(ToolchainError, match="NPU is not available"):
            Detector.from_file(path, device="NPU")
        assert Detector.from_file(path, device="NPU", fallback="cpu").backend.device == "CPU (fallback from NPU)"
        # NPU named inside HETERO passes the device check and fails when compiling
        with pytest.raises(ToolchainError, match="could not compile.*HETERO:NPU"):
            Detector.from_file(path, device="HETERO:NPU")
        assert Detector.from_file(path, device="HETERO:NPU", fallback="cpu").backend.device == \
            "CPU (fallback from HETERO:NPU)"


def test_uncompiled_file_is_never_called_edgetpu(rt_models, rt_image, tmp_path, capsys):
    """The `edgetpu` target written without edgetpu_compiler is refused for the Edge TPU (one line),
    or runs on the CPU and says so with --fallback cpu."""
    path = _edgetpu_copy(rt_models.tflite("int8"), tmp_path / "m_edgetpu.tflite", compiled=False)
    for dev in ("usb:0", "edgetpu", "coral-usb"):
        with pytest.raises(ModelFileError, match=r"not compiled for the Edge TPU \(its metadata says "
                                                 r"edgetpu.compiled=false\); compile it with `edgetpu_compiler") as e:
            Detector.from_file(path, device=dev)
        assert "\n" not in str(e.value)
    det = Detector.from_file(path, device="usb:0", fallback="cpu")
    assert det.backend.device == "CPU (fallback from edgetpu:usb:0)" and det.describe()["delegate"] is None
    assert "not compiled for the Edge TPU" in capsys.readouterr().err
    assert len(det.detect(rt_image)) > 0


_FAKE_DELEGATE = r"""
#include <stdint.h>
#include <stdlib.h>
typedef struct TfLiteDelegate {  /* tensorflow/lite/core/c/common.h */
  void* data_;
  int (*Prepare)(void* context, struct TfLiteDelegate* delegate);
  void* CopyFromBufferHandle; void* CopyToBufferHandle; void* FreeBufferHandle;
  int64_t flags;
  void* opaque_delegate_builder;
} TfLiteDelegate;
/* takes no node (returns kTfLiteOk), or fails (kTfLiteError) when FAKE_DELEGATE_FAIL is set */
static int prepare_none(void* c, TfLiteDelegate* d) { (void)c; (void)d; return 0; }
static int prepare_fail(void* c, TfLiteDelegate* d) { (void)c; (void)d; return 1; }
TfLiteDelegate* tflite_plugin_create_delegate(char** k, char** v, size_t n, void (*err)(const char*)) {
  (void)k; (void)v; (void)n; (void)err;
  TfLiteDelegate* d = calloc(1, sizeof *d);
  const char* f = getenv("FAKE_DELEGATE_FAIL");
  d->Prepare = (f && *f) ? prepare_fail : prepare_none;
  return d;
}
void tflite_plugin_destroy_delegate(TfLiteDelegate* d) { free(d); }
"""

_PROBE = """
import sys
from edgedet.runtime.detector import Detector
path, dev, fallback = sys.argv[1], sys.argv[2], sys.argv[3] or None
try:
    b = Detector.from_file(path, device=dev, fallback=fallback).backend
    print("OK", b.device, b.delegate)
except Exception as exc:
    print(type(exc).__name__, exc)
"""


def test_delegate_that_takes_nothing_or_fails_is_caught(rt_models, tmp_path):
    """A delegate library that loads but takes no op, or fails to prepare the graph, is an error
    (never reported as the delegate's device); --fallback cpu runs on the CPU and says so.
    Real LiteRT with a minimal delegate built from C, found as the NNAPI / Edge TPU library."""
    import os
    import shutil
    import subprocess
    import sys

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the test delegate")
    src = tmp_path / "fake_delegate.c"
    src.write_text(_FAKE_DELEGATE)
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(tmp_path / "libnnapi_delegate.so"), str(src)], check=True)
    shutil.copy(tmp_path / "libnnapi_delegate.so", tmp_path / "libedgetpu.so.1")
    fp32 = rt_models.tflite("fp32")
    compiled = _edgetpu_copy(fp32, tmp_path / "m_edgetpu.tflite", compiled=True)

    def probe(path, dev, fallback="", fail=""):
        env = dict(os.environ, LD_LIBRARY_PATH=str(tmp_path), FAKE_DELEGATE_FAIL=fail)
        r = subprocess.run([sys.executable, "-c", _PROBE, path, dev, fallback], capture_output=True, text=True, env=env)
        return r.stdout.strip()

    assert probe(fp32, "nnapi").startswith("ToolchainError nnapi delegate took no operation of")
    assert probe(compiled, "usb:0").startswith("ToolchainError edgetpu delegate took no operation of")
    assert probe(fp32, "nnapi", fail="1").startswith("ToolchainError nnapi delegate failed to prepare")
    assert probe(fp32, "nnapi", "cpu", fail="1") == "OK CPU (fallback from NNAPI) None"
    assert probe(compiled, "usb:0", "cpu") == "OK CPU (fallback from edgetpu:usb:0) None"


def test_keras_backend_is_the_same_pipeline(rt_models, rt_image):
    """A Keras model as a Detector (float baselines, `edgedet eval`) == Keras + shared pre/post-processing,
    batched too; per-call post-processing overrides equal a detector set up that way."""
    from edgedet.model.keras_backend import keras_detector

    det = keras_detector(rt_models.keras, rt_models.meta("keras"), score_threshold=0.3)
    want = rt_models.keras_detections(rt_image, score_threshold=0.3)
    assert_same_detections(det.detect(rt_image), want, atol_px=1e-3)
    flipped = np.ascontiguousarray(rt_image[::-1])
    a, b = det.detect_batch([rt_image, flipped])  # dynamic batch: one invoke for both
    assert_same_detections(a, want, atol_px=1e-2)
    assert_same_detections(b, det.detect(flipped), atol_px=1e-2)
    a2, b2 = det.detect_batch(det.preprocess_batch([rt_image, flipped]))  # prepared elsewhere
    assert_same_detections(a2, a, atol_px=1e-3) and assert_same_detections(b2, b, atol_px=1e-3)
    assert det.warmup() > 0 and det.describe()["backend"] == "keras"
    x, scales, hw = det.preprocess(rt_image)
    outs = det.infer(x)
    strict = keras_detector(rt_models.keras, rt_models.meta("keras"), score_threshold=0.6, max_detections=3)
    assert_same_detections(det.decode(outs, scales, hw, score_threshold=0.6, max_detections=3),
                           strict.decode(outs, scales, hw), atol_px=1e-6)
    raw = det.raw_outputs(outs)
    assert sorted(raw) == sorted(f"{k}_p{lv}" for k in ("class", "box") for lv in range(3, 8))
    assert raw["class_p3"].shape == (16, 16, 27) and raw["box_p7"].dtype == np.float32
