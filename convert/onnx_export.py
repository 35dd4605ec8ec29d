"""ONNX targets: ``onnx`` (float, tf2onnx) and ``onnx-int8`` (QDQ).

``onnx-int8`` comes from a QAT run (tf2onnx turns tfmot's FakeQuant ops into
QuantizeLinear/DequantizeLinear pairs with the trained ranges) or, for a float model, from
onnxruntime's static quantization of the float ONNX with ``--calib-data`` (QDQ format,
per-channel int8 weights, int8 activations).

Layout: the graph keeps the Keras model's NHWC input ``image`` (1, S, S, 3) float32 and the
10 raw outputs ``class_p3..box_p7`` (NHWC), batch fixed to 1.
"""
from __future__ import annotations

import os

from edgedet.errors import ConfigError, ToolchainError
from edgedet.runtime.metadata import META_KEY, ModelMeta

OPSET = 17  # >= 13 (per-channel QDQ); 17 is what onnxruntime and OpenVINO both handle natively


def _rename_outputs(model_proto, names: list[str]) -> None:
    """Give graph outputs the clean names (tfmot prefixes QAT outputs with ``quant_``)."""
    g = model_proto.graph
    for out, want in zip(list(g.output), names):
        old = out.name
        if old == want:
            continue
        for node in g.node:
            for i, o in enumerate(node.output):
                if o == old:
                    node.output[i] = want
            for i, x in enumerate(node.input):
                if x == old:
                    node.input[i] = want
        out.name = want


def _modern_resize(model_proto) -> None:
    """Rewrite tf2onnx's deprecated ``tf_half_pixel_for_nn`` Resize mode (onnxruntime warns on it).

    TF's half-pixel nearest resize picks ``floor((x + 0.5) / s)``; ONNX ``half_pixel`` with
    ``round_prefer_ceil`` picks ``floor((x + 0.5) / s - 0.5 + 0.5)`` — the same source pixel.
    """
    for node in model_proto.graph.node:
        if node.op_type != "Resize":
            continue
        attrs = {a.name: a for a in node.attribute}
        ctm = attrs.get("coordinate_transformation_mode")
        nm = attrs.get("nearest_mode")
        if ctm is not None and ctm.s == b"tf_half_pixel_for_nn" and (nm is None or nm.s == b"floor"):
            ctm.s = b"half_pixel"
            if nm is None:
                import onnx

                node.attribute.append(onnx.helper.make_attribute("nearest_mode", "round_prefer_ceil"))
            else:
                nm.s = b"round_prefer_ceil"


def quantize_conv_weights(model_proto, bits: int = 7) -> int:
    """Give float Conv weights of a QAT QDQ graph their own per-channel DequantizeLinear.

    tf2onnx constant-folds tfmot's weight fake-quant and then folds BatchNorm into the result, so
    the QAT ONNX has QDQ on activations only and float weights: onnxruntime cannot fuse such a
    Conv into QLinearConv and runs it in float. Per output channel, BN folding only rescales the
    fake-quantized grid, so re-quantizing each channel symmetrically recovers the QAT integers
    (8 bits). ``bits=7`` keeps one bit of headroom: x86 CPUs without VNNI accumulate u8 x s8
    pairs in saturating int16, which overflows with full-range 8-bit weights.

    Returns:
        The number of Conv nodes rewritten.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    g = model_proto.graph
    inits = {i.name: i for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    qmax = float(2 ** (bits - 1) - 1)
    new_nodes, done, made = [], 0, set()
    for node in g.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        src = producers.get(node.input[0])
        if src is None or src.op_type != "DequantizeLinear":
            continue  # only convs whose input is already quantized
        base = node.input[1]
        if base + "_dq" in made:  # a weight shared by several convs (e.g. the heads across levels)
            node.input[1] = base + "_dq"
            done += 1
            continue
        made.add(base + "_dq")
        w = numpy_helper.to_array(inits[base]).astype(np.float32)  # (O, I/g, kh, kw)
        amax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
        scale = np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)
        q = np.clip(np.round(w / scale[:, None, None, None]), -qmax, qmax).astype(np.int8)
        g.initializer.extend([
            numpy_helper.from_array(q, base + "_q"),
            numpy_helper.from_array(scale, base + "_scale"),
            numpy_helper.from_array(np.zeros_like(q[:, 0, 0, 0]), base + "_zp"),
        ])
        new_nodes.append(onnx.helper.make_node("DequantizeLinear", [base + "_q", base + "_scale", base + "_zp"],
                                               [base + "_dq"], name=base + "_DequantizeLinear", axis=0))
        node.input[1] = base + "_dq"
        done += 1
    # DequantizeLinear nodes have only initializer inputs, so putting them first keeps topological order.
    for n in reversed(new_nodes):
        g.node.insert(0, n)
    used = {i for n in g.node for i in n.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    return done


def keras_to_onnx(model, path: str, output_names: list[str] | None = None) -> None:
    """tf_keras model -> ONNX file at ``path`` (input ``image`` (1,S,S,3), opset :data:`OPSET`)."""
    import tensorflow as tf
    import tf2onnx

    shape = [1, *[int(d) for d in model.inputs[0].shape[1:]]]
    spec = (tf.TensorSpec(shape, tf.float32, name="image"),)
    try:
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=OPSET)
    except Exception as exc:  # noqa: BLE001 - tf2onnx raises many kinds
        raise ToolchainError(f"tf2onnx failed: {str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}") from exc
    if output_names:
        _rename_outputs(proto, output_names)
    _modern_resize(proto)
    import onnx

    onnx.save(proto, path)


def _clean_names(model) -> list[str]:
    from edgedet.convert.tflite_converter import output_names

    return output_names(model)


def onnx_file(ctx, kind: str) -> str:
    """Path of an intermediate ONNX in the work dir (cached): ``fp32`` or ``qat`` (QDQ)."""
    key = ("onnx", kind)
    if key in ctx.cache:
        return ctx.cache[key]
    src = ctx.source
    if src.kind == "onnx":
        if kind != "fp32":
            raise ConfigError("a QDQ ONNX needs a QAT run; for --from ONNX use --calib-data")
        ctx.cache[key] = src.path
        return src.path
    path = os.path.join(ctx.work_dir, f"model_{kind}.onnx")
    model = src.model()
    keras_to_onnx(model, path, _clean_names(model))
    if kind == "qat":
        import onnx

        proto = onnx.load(path)
        ctx.cache[("onnx", "qat-weights")] = quantize_conv_weights(proto, bits=7)
        onnx.save(proto, path)
    ctx.cache[key] = path
    return path


def write_onnx_meta(src_path: str, dst_path: str, meta: ModelMeta) -> None:
    """Copy an ONNX model to ``dst_path`` with ``metadata_props["edgedet"]`` set."""
    import onnx

    m = onnx.load(src_path)
    props = {p.key: p.value for p in m.metadata_props}
    props[META_KEY] = meta.to_json()
    del m.metadata_props[:]
    for k, v in props.items():
        m.metadata_props.add(key=k, value=v)
    m.producer_name = m.producer_name or "edgedet"
    onnx.save(m, dst_path)


def _ort_static_quant(ctx, fp32_path: str, out_path: str) -> dict:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    cal = ctx.calibration("NCHW" if ctx.source.meta.layout == "NCHW" else "NHWC")
    import onnx

    in_name = onnx.load(fp32_path, load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = ({in_name: x} for x in cal.arrays())

        def get_next(self):
            return next(self._it, None)

    # reduce_range: 7-bit weights. x86 CPUs without VNNI (AVX2, most AVX-512) multiply u8 x s8
    # pairs into saturating int16 (vpmaddubsw); with full 8-bit weights the sums overflow and the
    # tiny test model's box deltas came out 50% wrong in both onnxruntime and OpenVINO. 7-bit
    # weights cannot overflow and cost almost nothing on VNNI/ARM CPUs.
    quantize_static(
        fp32_path, out_path, Reader(), quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
    )
    return {"method": "ptq", "tool": "onnxruntime.quantize_static", "format": "QDQ", "per_channel_weights": True,
            "activations": "int8", "weights": "int8 (7-bit range, no int16 overflow on non-VNNI x86)",
            "calibration": cal.describe()}


def export_onnx(ctx, target, tmp_path: str, meta: ModelMeta) -> None:
    """``onnx`` / ``onnx-int8`` targets."""
    mode = target.options["mode"]
    if mode == "fp32":
        if ctx.source.is_qat:
            raise ConfigError(f"--target {target.name}: a QAT run exports as onnx-int8; convert the float run for float ONNX")
        src = onnx_file(ctx, "fp32")
        meta.quantization = {"method": "none"}
    elif ctx.source.is_qat:
        src = onnx_file(ctx, "qat")
        meta.quantization = {"method": "qat", "tool": "tf2onnx", "format": "QDQ", "opset": OPSET,
                             "weights": "int8 per-channel, 7-bit range (re-quantized after tf2onnx's BN folding)",
                             "quantized_convs": ctx.cache.get(("onnx", "qat-weights"))}
    else:
        src = os.path.join(ctx.work_dir, "model_ptq.onnx")
        if ("onnx", "ptq") not in ctx.cache:
            ctx.cache[("onnx", "ptq")] = _ort_static_quant(ctx, onnx_file(ctx, "fp32"), src)
        meta.quantization = dict(ctx.cache[("onnx", "ptq")])
    if meta.quantization.get("calibration"):
        meta.calib_sha256 = meta.quantization["calibration"]["sha256"]
    meta.quantization["opset"] = OPSET
    write_onnx_meta(src, tmp_path, meta)

