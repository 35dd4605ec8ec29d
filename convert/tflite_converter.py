"""Keras -> TFLite conversion: the one place that calls ``tf.lite.TFLiteConverter``.

Contract (see notes/COMMON.md)::

    keras_to_tflite(model, mode, representative=None, io_dtype="uint8") -> bytes

* ``mode`` is one of ``fp32``, ``fp16`` (float16 weights, float compute/IO), ``dynamic``
  (int8 weights, dynamic-range activations, float IO) or ``int8`` (full-integer,
  ``TFLITE_BUILTINS_INT8`` only, so any op that cannot be quantized fails the conversion
  instead of silently staying float).
* ``representative``: for ``int8`` on a float model, an iterable (or a zero-argument callable
  returning one) of normalised float32 arrays shaped (1, S, S, 3). A QAT model
  (``tfmot`` ``quantize_apply`` output) carries its own ranges and converts without it.
* ``io_dtype`` (``int8`` only): ``uint8`` (default, what the Edge TPU and most NPUs want),
  ``int8``, or ``float32`` (integer inside, float input/output).

Output naming (what callers can rely on): the converted model has ONE signature,
``serving_default``, with input ``images`` and outputs ``class_p3..class_p7, box_p3..box_p7``.
The converter itself names output *tensors* ``StatefulPartitionedCall:N`` and orders them
arbitrarily, so after conversion we rename each output tensor to its signature name and reorder
the subgraph outputs to the model's order (class_p3..p7, box_p3..p7). Hence
``interpreter.get_output_details()[i]["name"]`` is ``class_p3`` .. ``box_p7`` in that order, and
``get_signature_runner()`` returns a dict with the same keys. The input tensor has a fixed
batch of 1 (static shapes: the Edge TPU compiler and several NPU toolchains reject a dynamic
batch dimension).

Conversion is deterministic: the same model and the same representative arrays (same order)
give the same bytes.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from typing import Callable, Iterable

from edgedet.errors import ConfigError

MODES = ("fp32", "fp16", "dynamic", "int8")
IO_DTYPES = ("uint8", "int8", "float32")
INPUT_NAME = "images"

# Layer classes that tfmot inserts; their presence means the model is quantization-aware.
_QAT_LAYER_CLASSES = {"QuantizeWrapper", "QuantizeWrapperV2", "QuantizeLayer"}


def run_converter(conv) -> bytes:
    """``conv.convert()``, stopping on Ctrl-C.

    Calibration calls the representative dataset from C++, and TensorFlow swallows a
    KeyboardInterrupt raised there: the conversion ran on and wrote its file with exit 0. The
    interrupt is noted here and raised once ``convert()`` returns (the caller discards the file).
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return conv.convert()
    hit: list[bool] = []
    previous = signal.getsignal(signal.SIGINT)

    def note(signum, frame):
        hit.append(True)
        if callable(previous):
            previous(signum, frame)  # Python's own handler raises KeyboardInterrupt where it can

    signal.signal(signal.SIGINT, note)
    try:
        out = conv.convert()
    finally:
        signal.signal(signal.SIGINT, previous)
    if hit:
        raise KeyboardInterrupt
    return out

def is_qat_model(model) -> bool:
    """True if ``model`` was produced by ``tfmot.quantization.keras.quantize_apply``, or wraps one
    as a layer (e.g. the ``--nms`` model around a QAT detector)."""
    return any(type(layer).__name__ in _QAT_LAYER_CLASSES or (hasattr(layer, "layers") and is_qat_model(layer))
               for layer in model.layers)


def output_names(model) -> list[str]:
    """The model's output names with tfmot's ``quant_`` wrapper prefix removed.

    Returns:
        e.g. ``["class_p3", ..., "class_p7", "box_p3", ..., "box_p7"]`` for an edgedet model.
    """
    names = []
    for name in model.output_names:
        names.append(name[len("quant_"):] if name.startswith("quant_") else name)
    return names


def _check_args(mode: str, io_dtype: str) -> None:
    from edgedet.errors import did_you_mean

    if mode not in MODES:
        raise ConfigError(f"unknown quantization mode {mode!r}{did_you_mean(mode, MODES)}; choose one of {', '.join(MODES)}")
    if io_dtype not in IO_DTYPES:
        raise ConfigError(f"unknown io dtype {io_dtype!r}{did_you_mean(io_dtype, IO_DTYPES)}; choose one of {', '.join(IO_DTYPES)}")


def _representative_fn(representative, input_shape) -> Callable[[], Iterable[list]]:
    """Wrap arrays into the converter's ``representative_dataset`` (yields ``[array]``)."""
    import numpy as np

    def gen():
        source = representative() if callable(representative) else representative
        for arr in source:
            arr = np.asarray(arr, dtype=np.float32)
            if arr.ndim == 3:
                arr = arr[None]
            if tuple(arr.shape[1:]) != tuple(input_shape[1:]):
                raise ConfigError(
                    f"representative sample has shape {tuple(arr.shape)}; the model expects (1, {', '.join(map(str, input_shape[1:]))})"
                )
            yield [arr]

    return gen


def _upsample2x_concat(inputs, *args, **kwargs):
    """Nearest 2x upsampling ``(B, H, W, C) -> (B, 2H, 2W, C)`` as CONCATENATION + RESHAPE.

    ``[x, x]`` on channels reshaped to ``(H, 2W, C)`` repeats every column; ``[y, y]`` on width
    reshaped to ``(2H, 2W, C)`` repeats every row. Bit-identical to RESIZE_NEAREST_NEIGHBOR,
    also in int8 (both ops keep their input's scale), rank 4 throughout, and mappable by the
    Edge TPU.
    """
    import tensorflow as tf

    h, w, c = (int(d) for d in inputs.shape[1:])
    x = tf.reshape(tf.concat([inputs, inputs], axis=-1), [-1, h, 2 * w, c])
    return tf.reshape(tf.concat([x, x], axis=2), [-1, 2 * h, 2 * w, c])


@contextlib.contextmanager
def xnnpack_upsampling(model):
    """While tracing for TFLite, run every nearest 2x ``UpSampling2D`` as concat + reshape.

    TFLite's XNNPACK delegate has no RESIZE_NEAREST_NEIGHBOR kernel, so each BiFPN upsampling
    cut the delegated graph (Lite0: 12 resizes -> 13 XNNPACK partitions, the int8 resizes run by
    the slow reference kernels in between). The Keras model, and with it the ONNX/OpenVINO
    exports (which keep a Resize that onnx2tf can import back), is untouched: only the TFLite
    trace sees the rewrite. Works for QAT models too: tfmot's wrapper calls ``layer.call`` and
    then fake-quantizes the output, so the int8 concat/reshape get the upsampling's range.
    """
    import tf_keras as keras

    patched = []
    for layer in model.submodules:
        if (isinstance(layer, keras.layers.UpSampling2D) and layer.interpolation == "nearest"
                and tuple(layer.size) == (2, 2) and layer.data_format == "channels_last"):
            object.__setattr__(layer, "call", _upsample2x_concat)
            patched.append(layer)
    try:
        yield len(patched)
    finally:
        for layer in patched:
            object.__delattr__(layer, "call")


def make_converter(model, mode: str, representative=None, io_dtype: str = "uint8"):
    """Build a configured ``tf.lite.TFLiteConverter`` (also used by the diagnosis).

    Args:
        model: tf_keras Functional model, input (B, S, S, 3) float32 normalised, list of outputs.
        mode, representative, io_dtype: as in :func:`keras_to_tflite`.

    Returns:
        (converter, names) where ``names`` are the output names in model order.
    """
    _check_args(mode, io_dtype)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    qat = is_qat_model(model)
    if mode == "int8" and representative is None and not qat:
        raise ConfigError(
            "int8 conversion of a float model needs representative (calibration) data; pass representative= or use a QAT model"
        )
    shape = [1, *[int(d) for d in model.inputs[0].shape[1:]]]
    names = output_names(model)

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name=INPUT_NAME)])
    def serve(images):
        outs = model(images, training=False)
        if not isinstance(outs, (list, tuple)):
            outs = [outs]
        return {name: out for name, out in zip(names, outs)}

    with xnnpack_upsampling(model):
        concrete = serve.get_concrete_function()
    # The converter saves its trackable object as a SavedModel first. Handing it the Keras model
    # makes it re-trace every layer's call (~1200 traces: ~10x the CPU time of the conversion
    # itself); a bare module holding only the variables is all the saved function needs.
    holder = tf.Module()
    holder.variables_ = list(model.variables)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete], holder)
    if mode == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif mode == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode == "int8":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        if not qat:
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # For a QAT model TFLITE_BUILTINS_INT8 cannot be requested: TF 2.20's converter
        # validates it before it has looked at the graph, sees no fake-quant ops and demands a
        # representative dataset. keras_to_tflite checks the result for float ops instead.
        if representative is not None and not qat:
            conv.representative_dataset = _representative_fn(representative, shape)
        dtype = {"uint8": tf.uint8, "int8": tf.int8, "float32": tf.float32}[io_dtype]
        conv.inference_input_type = dtype
        conv.inference_output_type = dtype
    return conv, names


def signature_output_names(tflite_bytes: bytes) -> dict[str, str]:
    """``{output tensor name: signature key}`` (e.g. ``{"StatefulPartitionedCall:5": "class_p3"}``)."""
    from tensorflow.lite.tools import flatbuffer_utils as fbu

    model = fbu.convert_bytearray_to_object(bytearray(tflite_bytes))
    if not model.signatureDefs:
        return {}
    sub = model.subgraphs[0]
    return {_tensor_name(sub.tensors[t.tensorIndex]): (t.name.decode() if isinstance(t.name, bytes) else t.name)
            for t in model.signatureDefs[0].outputs}


def _desplat_biases(model) -> list:
    """Make every conv bias of a QAT model non-uniform for the duration of a conversion.

    TF 2.20's converter quantizes a per-channel conv's int32 bias with the FIRST channel's scale
    when the bias constant is a splat (all channels equal, e.g. an untrained class bias still at
    the focal-loss prior): the other channels come out shifted by up to several output steps,
    while post-training quantization is unaffected. A relative change of 1e-6 (far below the
    int32 bias step) breaks the splat. Returns ``[(variable, original value)]`` to restore.
    """
    import numpy as np

    restore = []
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        bias = getattr(inner, "bias", None)
        if bias is None or int(np.prod(bias.shape)) < 2:
            continue
        value = bias.numpy()
        if np.all(value == value.flat[0]):
            ramp = np.linspace(-1.0, 1.0, value.size, dtype=np.float64).reshape(value.shape)
            eps = 1e-6 * max(abs(float(value.flat[0])), 1e-3)
            bias.assign((value + ramp * eps).astype(value.dtype))
            restore.append((bias, value))
    return restore


def rename_outputs(tflite_bytes: bytes, names: list[str], graph_order: list[str] | None = None) -> bytes:
    """Name each output tensor after its signature key and order outputs like ``names``.

    Args:
        tflite_bytes: a converted model with one signature whose output keys are ``names``.
        names: desired output order, e.g. class_p3..class_p7, box_p3..box_p7.
        graph_order: for a model converted without a signature (the frozen-graph path), the
            name of each graph output in order; a ``serving_default`` signature is then added.

    Returns:
        The rewritten flatbuffer (same weights and ops; only names/order of outputs change).
    """
    from tensorflow.lite.tools import flatbuffer_utils as fbu

    model = fbu.convert_bytearray_to_object(bytearray(tflite_bytes))
    sub = model.subgraphs[0]
    if not model.signatureDefs and graph_order and len(graph_order) == len(sub.outputs) and len(sub.inputs) == 1:
        from tensorflow.lite.python import schema_py_generated as schema

        def tmap(name, index):
            t = schema.TensorMapT()
            t.name, t.tensorIndex = name.encode(), index
            return t

        sig = schema.SignatureDefT()
        sig.signatureKey, sig.subgraphIndex = b"serving_default", 0
        sig.inputs = [tmap(INPUT_NAME, sub.inputs[0])]
        sig.outputs = [tmap(n, i) for n, i in zip(graph_order, sub.outputs)]
        model.signatureDefs = [sig]
    if not model.signatureDefs:
        return tflite_bytes
    sig = model.signatureDefs[0]
    by_name = {}
    for tmap in sig.outputs:
        key = tmap.name.decode() if isinstance(tmap.name, bytes) else tmap.name
        by_name[key] = tmap.tensorIndex
    if set(by_name) != set(names):
        return tflite_bytes  # not an edgedet-shaped model; leave it alone
    for key, idx in by_name.items():
        sub.tensors[idx].name = key.encode()
    sub.outputs = [by_name[n] for n in names]
    # Signature entries in model order too (the runner returns a dict, but keep it tidy).
    sig.outputs = sorted(sig.outputs, key=lambda t: names.index(t.name.decode() if isinstance(t.name, bytes) else t.name))
    return bytes(fbu.convert_object_to_bytearray(model))


def float_ops(tflite_bytes: bytes) -> list[dict]:
    """Ops of a (supposedly) integer model that still compute in float.

    An op counts as float if any of its input or output tensors is float32/float16, except
    the boundary QUANTIZE (float graph input -> int) and DEQUANTIZE (int -> float graph
    output) of a model with float I/O.

    Returns:
        ``[{"index": i, "op": "LOGISTIC", "outputs": ["tensor name", ...]}]`` in graph order.
    """
    from tensorflow.lite.tools import flatbuffer_utils as fbu

    model = fbu.convert_bytearray_to_object(bytearray(tflite_bytes))
    sub = model.subgraphs[0]
    float_types = {0, 1}  # TensorType.FLOAT32, FLOAT16
    graph_in, graph_out = set(sub.inputs), set(sub.outputs)
    found = []
    for i, op in enumerate(sub.operators):
        name = fbu.opcode_to_name(model, op.opcodeIndex)
        ins = [t for t in op.inputs if t >= 0]
        outs = list(op.outputs)
        if name == "QUANTIZE" and set(ins) <= graph_in:
            continue
        if name == "DEQUANTIZE" and set(outs) <= graph_out:
            continue
        if any(sub.tensors[t].type in float_types for t in ins + outs):
            found.append({"index": i, "op": name, "outputs": [_tensor_name(sub.tensors[t]) for t in outs]})
    return found


def op_counts(tflite_bytes: bytes) -> dict[str, int]:
    """``{op name: count}`` of subgraph 0 (e.g. ``{"CONV_2D": 40, "ADD": 12}``)."""
    from collections import Counter

    from tensorflow.lite.tools import flatbuffer_utils as fbu

    model = fbu.convert_bytearray_to_object(bytearray(tflite_bytes))
    return dict(Counter(fbu.opcode_to_name(model, op.opcodeIndex) for op in model.subgraphs[0].operators))


def interpreter(tflite_bytes: bytes, num_threads: int | None = None):
    """An allocated LiteRT interpreter (ai_edge_litert, else tf.lite) for in-memory bytes."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - tensorflow's bundled interpreter
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    it = Interpreter(model_content=bytes(tflite_bytes), num_threads=num_threads)
    it.allocate_tensors()
    return it


def _tensor_name(tensor) -> str:
    return tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)


def keras_to_tflite(model, mode: str, representative=None, io_dtype: str = "uint8") -> bytes:
    """Convert a tf_keras model to a TFLite flatbuffer.

    Args:
        model: tf_keras Functional model; input (B, S, S, 3) float32 already normalised;
            outputs class_pL (B, H_L, W_L, A*K) and box_pL (B, H_L, W_L, A*4). May be a QAT model.
        mode: ``fp32`` | ``fp16`` | ``dynamic`` | ``int8``.
        representative: for ``int8`` on a float model, iterable (or callable returning one) of
            float32 (1, S, S, 3) normalised images. Ignored for other modes.
        io_dtype: ``uint8`` | ``int8`` | ``float32``: input/output type of an ``int8`` model.

    Returns:
        The flatbuffer bytes; input tensor (1, S, S, 3), outputs named and ordered
        class_p3..class_p7, box_p3..box_p7.

    Raises:
        ConfigError: unknown mode/io dtype, or int8 of a float model without representative data.
        ToolchainError: the converter failed (e.g. an op has no int8 kernel), first line of its message.
    """
    from edgedet.errors import ToolchainError

    conv, names = make_converter(model, mode, representative, io_dtype)
    restore, graph_order = [], None
    if mode == "int8" and is_qat_model(model):
        restore = _desplat_biases(model)
        # The converter's SavedModel detour costs ~4x the conversion itself for a QAT graph
        # (it traces a gradient function for every fake-quant op). The frozen-graph path gives
        # the same ops and values, minus the signature, which rename_outputs adds back;
        # tf.nest flattens the serving dict by sorted key, which fixes the output order.
        conv.experimental_lower_to_saved_model = False
        graph_order = sorted(names)
    try:
        with warnings.catch_warnings():
            # Frozen-graph path of a QAT model: the input range comes from its fake-quant node,
            # so the converter's "statistics for quantized inputs were expected" is noise.
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            raw = run_converter(conv)
    except ConfigError:
        raise
    except Exception as exc:  # converter errors are multi-line MLIR dumps; keep the gist
        first = next((ln.strip() for ln in str(exc).splitlines() if "error" in ln.lower()), str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise ToolchainError(f"TFLite {mode} conversion failed: {first[:300]}") from exc
    finally:
        for var, value in restore:
            var.assign(value)
    out = rename_outputs(raw, names, graph_order)
    if mode == "int8":
        islands = float_ops(out)
        if islands:
            desc = ", ".join(f"{f['op']}->{f['outputs'][0] if f['outputs'] else '?'}" for f in islands[:5])
            raise ToolchainError(
                f"int8 conversion left {len(islands)} float op(s) ({desc}); a layer lacks quantization ranges"
            )
    return out
