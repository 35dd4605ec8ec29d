"""OpenVINO targets: an IR folder ``<stem>_openvino-<mode>/<stem>.xml|.bin``.

The IR is converted from the float ONNX (``openvino.convert_model``): OpenVINO's ONNX frontend
keeps the output names and order, which its TensorFlow frontend does not for a tf_keras model
with a list of outputs. ``openvino-int8`` is either

* ``qat``: the QDQ ONNX of a QAT run (tf2onnx), whose Quantize/Dequantize pairs OpenVINO turns
  into FakeQuantize and runs as int8, or
* ``nncf-ptq``: NNCF post-training quantization of the float IR with ``--calib-data``.

The metadata (``rt_info["edgedet"]``) records which one in ``quantization.method``.
"""
from __future__ import annotations

import os

from edgedet.errors import ConfigError, ToolchainError
from edgedet.runtime.metadata import META_KEY, ModelMeta


def _nncf_quantize(ctx, ov_model) -> tuple[object, dict]:
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    from edgedet.quiet import quiet_nncf

    quiet_nncf(nncf)
    cal = ctx.calibration("NCHW" if ctx.source.meta.layout == "NCHW" else "NHWC")
    arrays = list(cal.arrays())
    # OverflowFix.ENABLE: 7-bit weights in every layer (NNCF's default fixes only the first).
    # On x86 without VNNI the u8 x s8 dot products saturate int16 otherwise; measured on the
    # test model: box deltas off by 0.52 (range 1.0) with the default, 0.025 with ENABLE.
    params = AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE)
    try:
        q = nncf.quantize(ov_model, nncf.Dataset(arrays), subset_size=len(arrays), preset=nncf.QuantizationPreset.MIXED,
                          advanced_parameters=params)
    except Exception as exc:  # noqa: BLE001
        raise ToolchainError(f"NNCF quantization failed: {str(exc).splitlines()[0][:300]}") from exc
    return q, {"method": "nncf-ptq", "tool": f"nncf {nncf.__version__}", "preset": "mixed", "overflow_fix": "enable",
               "calibration": cal.describe()}


def export_openvino(ctx, target, tmp_dir: str, meta: ModelMeta) -> None:
    """Write the IR (``.xml`` + ``.bin``) into ``tmp_dir``."""
    import openvino as ov

    from edgedet.convert.onnx_export import onnx_file

    mode = target.options["mode"]
    src = ctx.source
    if mode != "int8" and src.is_qat:
        raise ConfigError(f"--target {target.name}: a QAT run exports as openvino-int8; convert the float run for float IR")
    if mode == "int8" and src.is_qat:
        model = ov.convert_model(onnx_file(ctx, "qat"))
        q = {"method": "qat", "tool": "tf2onnx QDQ -> openvino.convert_model", "source": "qdq-onnx"}
    else:
        model = ov.convert_model(onnx_file(ctx, "fp32"))
        q = {"method": "fp16" if mode == "fp16" else "none"}
        if mode == "int8" and getattr(ctx, "max_drop", None) is not None:
            from edgedet.quantize.budget_openvino import nncf_accuracy_control

            model, q = nncf_accuracy_control(ctx, model, meta)
        elif mode == "int8":
            model, q = _nncf_quantize(ctx, model)
    if q.get("calibration"):
        meta.calib_sha256 = q["calibration"]["sha256"]
    q["weights"] = {"fp16": "float16", "fp32": "float32"}.get(mode, "int8")
    meta.quantization = q
    meta.layout = meta.layout or "NHWC"
    model.set_rt_info(meta.to_json(), META_KEY)
    xml = os.path.join(tmp_dir, f"{src.stem}.xml")
    ov.save_model(model, xml, compress_to_fp16=(mode == "fp16"))
