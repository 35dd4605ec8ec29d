"""TFLite targets: fp32, fp16, dynamic, int8 (QAT or PTQ), optionally with in-graph NMS.

The conversion itself is :func:`edgedet.convert.tflite_converter.keras_to_tflite` (the quantize stage
owns the converter settings); this module adds naming, calibration, ``--nms`` and metadata.
"""
from __future__ import annotations

from edgedet.runtime.metadata import ModelMeta

_METHOD = {"fp32": "none", "fp16": "fp16", "dynamic": "dynamic"}


def io_quantization(data: bytes) -> dict:
    """Input/output dtypes and (scale, zero_point) of a converted model, for the metadata."""
    from edgedet.convert.tflite_inspect import read_graph

    g = read_graph(data)
    per_channel = any(t.scales > 1 for t in g.tensors)
    ops = g.op_counts()
    return {
        "input": {"name": g.inputs[0].name, "dtype": g.inputs[0].dtype, "quant": g.inputs[0].quant},
        "outputs": {t.name: {"dtype": t.dtype, "quant": t.quant} for t in g.outputs},
        "per_channel_weights": per_channel,
        "float_ops": sorted({op.name for op in g.ops if any(
            t is not None and not t.is_const and t.dtype == "float32" for t in op.inputs + op.outputs)}),
        "ops": len(g.ops),
        "dequantize_ops": ops.get("DEQUANTIZE", 0),
    }


def tflite_bytes(ctx, mode: str) -> tuple[bytes, dict]:
    """Convert the context's source to TFLite bytes in ``mode``; also return quantization info."""
    src = ctx.source
    model = src.model()
    representative, q = None, {"method": _METHOD.get(mode, "none")}
    if mode == "int8":
        method = ctx.quant_source()
        q = {"method": method, "io_dtype": ctx.io_dtype}
        if method == "ptq":
            cal = ctx.calibration()
            representative = cal.arrays
            q["calibration"] = cal.describe()
    key = ("tflite", mode, ctx.io_dtype, ctx.nms)
    if key in ctx.cache:  # e.g. tflite-int8 and edgetpu in one call: calibrate once
        return ctx.cache[key]
    if mode == "int8" and getattr(ctx, "max_drop", None) is not None:  # accuracy-aware: some layers float
        from edgedet.quantize.budget import budget_tflite

        data, q["budget"] = budget_tflite(ctx, representative)
    elif ctx.nms:
        import contextlib

        from edgedet.convert.nms import (convert_with_nms, qat_pixel_input, qat_shared_head_ranges, with_nms,
                                         with_pixel_extremes)

        m = src.meta
        nm = with_nms(model, m.input_size, m.anchor_config, m.num_classes, **ctx.nms_options)
        pixels, head = contextlib.nullcontext(), contextlib.nullcontext()
        if representative is not None:
            representative = with_pixel_extremes(representative, m.input_size, m.mean, m.std)
        elif mode == "int8":
            pixels, head = qat_pixel_input(model, m.mean, m.std), qat_shared_head_ranges(model)
        with pixels, head:
            data = convert_with_nms(nm, mode, representative, ctx.io_dtype)
    else:
        from edgedet.convert.tflite_converter import keras_to_tflite

        data = keras_to_tflite(model, mode, representative, io_dtype=ctx.io_dtype)
    q.update(io_quantization(data))
    ctx.cache[key] = (data, q)
    return data, q


def export_tflite(ctx, target, tmp_path: str, meta: ModelMeta, embed: bool = True) -> None:
    """Write ``tmp_path`` for a ``tflite-*`` target (standard metadata + edgedet JSON unless ``embed=False``)."""
    data, q = tflite_bytes(ctx, target.options["mode"])
    with open(tmp_path, "wb") as f:
        f.write(data)
    meta.quantization = dict(q)
    if ctx.source.kind == "onnx":
        meta.layout = "NHWC"  # onnx2tf always produces an NHWC input
    if q.get("calibration"):
        meta.calib_sha256 = q["calibration"]["sha256"]
    if ctx.nms:
        from edgedet.convert.nms import NMS_OUTPUT_NAMES

        meta.outputs = "nms"
        meta.output_names = list(NMS_OUTPUT_NAMES)
        meta.extra["nms"] = dict(ctx.nms_options)
    if embed:
        from edgedet.convert.tflite_metadata import write_tflite_metadata

        write_tflite_metadata(tmp_path, meta, ctx.log)
