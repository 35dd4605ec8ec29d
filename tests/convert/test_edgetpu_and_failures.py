"""Edge TPU check (compiler log parsing, Lite0 int8 100% mappable) and failed exports leaving nothing."""
from __future__ import annotations

import os

import pytest

from edgedet.convert.edgetpu import EDGETPU_OPS, INSTALL_HINT, check_edgetpu, parse_compiler_log

# What edgetpu_compiler 16 prints for a model that is cut before its last ops (trimmed).
COMPILER_LOG = """Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 1432 ms.

Input model: lite0_tflite-int8.tflite
Input size: 4.35MiB
Output model: lite0_tflite-int8_edgetpu.tflite
Output size: 5.01MiB
On-chip memory used for caching model parameters: 4.23MiB
On-chip memory remaining for caching model parameters: 3.18MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 267
Operation log: lite0_tflite-int8_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the model will instead run on the CPU, which is slower. If possible, consider updating your model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 264
Number of operations that will run on CPU: 3

Operator                       Count      Status

CONV_2D                        102        Mapped to Edge TPU
LOGISTIC                       1          Operation is otherwise supported, but not mapped due to some unspecified limitation
CUSTOM                         1          Operation is working on an unsupported data type
DEQUANTIZE                     1          Operation is working on an unsupported data type
"""


def test_parse_compiler_log():
    p = parse_compiler_log(COMPILER_LOG)
    assert p["on_tpu"] == 264 and p["on_cpu"] == 3 and p["total"] == 267 and p["subgraphs"] == 1
    assert set(p["cpu_ops"]) == {"LOGISTIC", "CUSTOM", "DEQUANTIZE"}
    full = parse_compiler_log("Model compiled successfully in 900 ms.\nTotal number of operations: 120\n")
    assert full["on_tpu"] == 120 and full["on_cpu"] == 0


def test_op_table_covers_what_our_models_use():
    for op in ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MAX_POOL_2D", "RESIZE_NEAREST_NEIGHBOR", "QUANTIZE",
               "STRIDED_SLICE", "MUL", "LOGISTIC", "CONCATENATION", "RESHAPE"):
        assert op in EDGETPU_OPS
    assert "DEQUANTIZE" not in EDGETPU_OPS and "TFLite_Detection_PostProcess" not in EDGETPU_OPS
    assert "apt-get install edgetpu-compiler" in INSTALL_HINT and "coral-edgetpu-stable" in INSTALL_HINT


def test_failed_export_leaves_nothing_behind(tiny_run, tmp_path):
    """A calibration image that cannot be decoded fails tflite-int8 mid-export: no file, no temp."""
    from edgedet.convert.api import convert
    from edgedet.errors import DataError

    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "ok.jpg").write_bytes(open(__file__, "rb").read()[:10])  # not an image
    out = tmp_path / "out"
    with pytest.raises(DataError) as e:
        convert(["tflite-int8", "openvino-int8"], weights=str(tiny_run), calib_data=str(calib), out_dir=str(out), log=lambda m: None)
    assert "ok.jpg" in str(e.value) and "\n" not in str(e.value)
    assert not out.exists()  # the --out folder this call made goes too: nothing was written


def test_existing_artifact_survives_a_failed_reexport(tiny_run, tmp_path, monkeypatch):
    from edgedet.convert import tflite_export
    from edgedet.convert.api import convert
    from edgedet.errors import ToolchainError

    out = tmp_path / "out"
    out.mkdir()
    old = out / "test-lite_tflite-fp32.tflite"
    old.write_bytes(b"previous model")

    def half_write(ctx, target, tmp_path, meta, embed=True):
        with open(tmp_path, "wb") as f:
            f.write(b"TFL3 half")
        raise ToolchainError("converter crashed")

    monkeypatch.setattr(tflite_export, "export_tflite", half_write)
    with pytest.raises(ToolchainError, match="tflite-fp32: converter crashed"):
        convert(["tflite-fp32"], weights=str(tiny_run), out_dir=str(out), log=lambda m: None)
    assert sorted(os.listdir(out)) == [old.name] and old.read_bytes() == b"previous model"


@pytest.mark.slow
def test_lite0_int8_is_fully_edgetpu_mappable(tmp_path, cv, bccd):
    """Lite0 (320 px, raw outputs) full-integer TFLite maps 100% onto the Edge TPU."""
    from edgedet.convert.api import convert

    run = cv.make_run(tmp_path / "lite0", variant="lite0", num_classes=3, image_size=320)
    (art,), _ = convert(["edgetpu"], weights=str(run), calib_data=str(bccd), calib_count=4, out_dir=str(tmp_path / "out"),
                        log=lambda m: None)
    rep = check_edgetpu(art.path)
    assert rep.mappable_pct == 100.0, rep.summary()
    assert rep.first_unmapped is None and not rep.model_errors
    assert len(rep.ops) > 200
    from edgedet.runtime.metadata import read_metadata

    assert read_metadata(art.path).extra["edgetpu"]["mappable_pct"] == 100.0
    assert rep.on_tpu == len(rep.ops)
