"""``--nms``: TFLite models with the standard in-graph post-processing op.

Android's TFLite Task library, MediaPipe and the Coral examples expect a detector to end in
``TFLite_Detection_PostProcess`` with four outputs (boxes, classes, scores, count). TensorFlow
has no such op; the TF Object Detection API and google/automl use a placeholder
``tf.function`` carrying ``experimental_implements="TFLite_Detection_PostProcess ..."`` which
the TFLite converter replaces by the custom op (tensorflow/compiler/mlir/lite/utils/nms_utils.cc).
We do the same.

The op decodes ``(ty, tx, th, tw)`` deltas against anchors given as normalised
``(cy, cx, h, w)`` with y/x/h/w scales 1.0 (our box coder has no scale factors), so its boxes
come out normalised ``(ymin, xmin, ymax, xmax)`` on the letterboxed input canvas. It takes
scores, not logits: a sigmoid runs in the graph before it, over all anchors and classes —
which is why the default export keeps raw outputs and leaves thresholding to the runtime.
"""
from __future__ import annotations

import contextlib

import numpy as np

from edgedet.runtime.outputs import NMS_OUTPUT_NAMES


def nms_signature(num_classes: int, max_detections: int, score_threshold: float, iou_threshold: float,
                  per_class: bool = False) -> str:
    """The ``experimental_implements`` string the converter turns into the custom op.

    ``per_class``: the op's "regular" NMS, one suppression per class (the runtime's default, so
    the raw file's detections); otherwise its quick mode, which gives each anchor its best class
    and suppresses across classes (the runtime's ``nms="global"``).
    """
    attrs = [
        'name: "TFLite_Detection_PostProcess"',
        f'attr {{ key: "max_detections" value {{ i: {int(max_detections)} }} }}',
        'attr { key: "max_classes_per_detection" value { i: 1 } }',
        f'attr {{ key: "detections_per_class" value {{ i: {int(max_detections)} }} }}',
        f'attr {{ key: "use_regular_nms" value {{ b: {str(bool(per_class)).lower()} }} }}',
        f'attr {{ key: "nms_score_threshold" value {{ f: {float(score_threshold):f} }} }}',
        f'attr {{ key: "nms_iou_threshold" value {{ f: {float(iou_threshold):f} }} }}',
        'attr { key: "y_scale" value { f: 1.0 } }',
        'attr { key: "x_scale" value { f: 1.0 } }',
        'attr { key: "h_scale" value { f: 1.0 } }',
        'attr { key: "w_scale" value { f: 1.0 } }',
        f'attr {{ key: "num_classes" value {{ i: {int(num_classes)} }} }}',
    ]
    return " ".join(attrs)


def normalized_anchors(input_size, anchor_config) -> np.ndarray:
    """``(N, 4)`` float32 anchors ``(cy, cx, h, w)`` divided by the input size."""
    from edgedet.runtime.anchors import generate_anchors

    h, w = int(input_size[0]), int(input_size[1])
    c = generate_anchors((h, w), anchor_config).center
    return (c / np.array([h, w, h, w], np.float32)).astype(np.float32)


def with_nms(model, input_size, anchor_config, num_classes: int, max_detections: int = 100,
             score_threshold: float = 0.05, iou_threshold: float = 0.5, per_class: bool = False):
    """Append sigmoid + ``TFLite_Detection_PostProcess`` to an edgedet model.

    Args:
        model: tf_keras model, input (1, h, w, 3) normalised; outputs class_p3..p7
            ``(1, H, W, A*C)`` then box_p3..p7 ``(1, H, W, A*4)``.

    Returns:
        tf_keras model with outputs :data:`NMS_OUTPUT_NAMES`: boxes ``(1, K, 4)`` normalised
        yxyx, classes ``(1, K)`` (float ids, 0-based), scores ``(1, K)``, count ``(1,)``.
    """
    import tensorflow as tf
    import tf_keras as keras

    anchors = normalized_anchors(input_size, anchor_config)
    nlev = len(model.outputs) // 2
    signature = nms_signature(num_classes, max_detections, score_threshold, iou_threshold, per_class)

    @tf.function(experimental_implements=signature)
    def detection_postprocess(box_encodings, class_predictions, anchor_boxes):
        # Placeholder body: the converter swaps the whole call for the custom op.
        boxes = tf.constant(0.0, dtype=tf.float32, name="boxes")
        scores = tf.constant(0.0, dtype=tf.float32, name="scores")
        classes = tf.constant(0.0, dtype=tf.float32, name="classes")
        num = tf.constant(0.0, dtype=tf.float32, name="num_detections")
        return boxes, classes, scores, num

    def post(outs):
        cls = tf.concat([tf.reshape(t, (1, -1, num_classes)) for t in outs[:nlev]], axis=1)
        box = tf.concat([tf.reshape(t, (1, -1, 4)) for t in outs[nlev:]], axis=1)
        return detection_postprocess(box, tf.sigmoid(cls), tf.constant(anchors))

    inp = keras.Input(tuple(int(d) for d in model.inputs[0].shape[1:]), batch_size=1, name="image")
    outs = model(inp)
    res = keras.layers.Lambda(post, name="detection_postprocess")(list(outs))
    named = [keras.layers.Activation("linear", name=n)(t) for n, t in zip(NMS_OUTPUT_NAMES, res)]
    return keras.Model(inp, named, name=f"{model.name}_nms")


def pixel_range(mean, std) -> tuple[float, float]:
    """Normalised values of pixels 0 and 255: ``(min, max)`` over the channels."""
    m, s = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    return float(np.min((0.0 - m) / s)), float(np.max((255.0 - m) / s))


def with_pixel_extremes(representative, input_size, mean, std):
    """Calibration data plus one canvas holding pixel values 0 and 255 (the rest mean grey).

    An int8 ``--nms`` model is what MediaPipe and the Coral examples feed raw camera bytes:
    they skip normalisation for an integer input, so the input quantization must *be* the
    normalisation, ``real = (q - mean) / std``. The converter takes the input range from the
    calibration min/max; this one sample makes it exactly ``[(0 - mean)/std, (255 - mean)/std]``
    (scale 1/std, zero point mean for uint8) and barely touches any other range.
    """
    h, w = int(input_size[0]), int(input_size[1])
    canvas = np.broadcast_to(np.round(np.asarray(mean, np.float32)), (h, w, 3)).copy()
    canvas[0, 0], canvas[0, 1] = 0.0, 255.0
    extreme = ((canvas - np.asarray(mean, np.float32)) / np.asarray(std, np.float32))[None].astype(np.float32)

    def gen():
        yield from (representative() if callable(representative) else representative)
        yield extreme

    return gen


@contextlib.contextmanager
def qat_pixel_input(model, mean, std):
    """While converting, set a QAT model's input fake-quant range to the pixel range (see
    :func:`with_pixel_extremes`); the trained range is restored afterwards."""
    lo, hi = pixel_range(mean, std)
    saved = []
    for layer in model.layers:  # the QuantizeLayer that reads the image input
        if type(layer).__name__ == "QuantizeLayer" and any(layer.input is t for t in model.inputs):
            for v in layer.weights:
                short = v.name.split("/")[-1].split(":")[0]  # "<layer name>_min", "<layer name>_max"
                if short.endswith(("_min", "_max")):
                    saved.append((v, v.numpy()))
                    v.assign(np.full(v.shape, lo if short.endswith("_min") else hi, v.dtype.as_numpy_dtype))
    try:
        yield len(saved)
    finally:
        for v, value in saved:
            v.assign(value)


def _range_vars(layer, depth: int = 4) -> list:
    """The ``(min, max)`` variables of the fake-quant that sets ``layer``'s output range: its own
    (``post_activation_*`` or ``output_*``), else those of the layer feeding it (a reshape or a
    linear activation passes its input's range through)."""
    for suffix in ("post_activation", "output"):
        pair = [next((v for v in layer.weights if v.name.split("/")[-1].startswith(f"{suffix}_{end}")), None)
                for end in ("min", "max")]
        if all(p is not None for p in pair):
            return pair
    inbound = getattr(layer, "inbound_nodes", None) or getattr(layer, "_inbound_nodes", [])
    if depth and inbound and inbound[0].inbound_layers and not isinstance(inbound[0].inbound_layers, list):
        return _range_vars(inbound[0].inbound_layers, depth - 1)
    return []


@contextlib.contextmanager
def qat_shared_head_ranges(model):
    """While converting a QAT model with ``--nms``, give the class outputs of every level one
    range, and the box outputs another (the union of the trained per-level ranges).

    The NMS op reads all levels concatenated, and an int8 CONCATENATION needs one scale: with
    per-level QAT ranges the converter requantizes each level int8 -> int8 first, and those
    QUANTIZE ops round differently in different kernel sets (LiteRT's XNNPACK and MediaPipe's
    bundled TFLite gave scores 0.01-0.02 apart on the same file). Post-training quantization
    calibrates the concatenation, so its files have one range per group already.
    """
    outs = [t._keras_history.layer for t in model.outputs]  # noqa: SLF001 - tf_keras' graph links
    nlev = len(outs) // 2
    saved = []
    for group in (outs[:nlev], outs[nlev:]):
        pairs = [_range_vars(layer) for layer in group]
        if not all(pairs):
            continue
        lo = min(float(p[0].numpy()) for p in pairs)
        hi = max(float(p[1].numpy()) for p in pairs)
        for vmin, vmax in pairs:
            saved += [(vmin, vmin.numpy()), (vmax, vmax.numpy())]
            vmin.assign(np.full(vmin.shape, lo, vmin.dtype.as_numpy_dtype))
            vmax.assign(np.full(vmax.shape, hi, vmax.dtype.as_numpy_dtype))
    try:
        yield len(saved) // 2
    finally:
        for v, value in saved:
            v.assign(value)


def convert_with_nms(model, mode: str, representative=None, io_dtype: str = "uint8") -> bytes:
    """Like :func:`edgedet.convert.tflite_converter.keras_to_tflite` for a :func:`with_nms` model.

    The post-processing op is a float custom op, so outputs stay float32 (the input of an
    int8 model is still ``io_dtype``).
    """
    import tensorflow as tf

    from edgedet.errors import ToolchainError
    from edgedet.convert.tflite_converter import (_desplat_biases, is_qat_model, make_converter, rename_outputs,
                                                  run_converter)

    conv, names = make_converter(model, mode, representative, io_dtype)
    conv.allow_custom_ops = True
    restore = []
    if mode == "int8":
        conv.inference_output_type = tf.float32
        if is_qat_model(model):  # same splat-bias workaround as keras_to_tflite
            restore = _desplat_biases(next(l for l in model.layers if hasattr(l, "layers")))
    try:
        raw = run_converter(conv)
    except Exception as exc:  # noqa: BLE001 - converter errors are long MLIR dumps
        first = next((ln.strip() for ln in str(exc).splitlines() if "error" in ln.lower()), str(exc)[:200])
        raise ToolchainError(f"TFLite {mode} conversion with --nms failed: {first[:300]}") from exc
    finally:
        for var, value in restore:
            var.assign(value)
    out = rename_outputs(raw, names)
    return dequantize_last(out) if mode == "int8" else out


def dequantize_last(tflite_bytes: bytes) -> bytes:
    """Run the DEQUANTIZE ops that feed ``TFLite_Detection_PostProcess`` right before it.

    The converter places the box branch's DEQUANTIZE where that branch ends, in the middle of
    the class head. The Edge TPU compiler maps ops in execution order up to the first one it
    cannot map, so that DEQUANTIZE would leave the rest of the class head on the CPU. Moved
    to the end (a valid order: only the NMS op reads them), the graph is 8-bit up to a float
    tail of DEQUANTIZE + NMS, the layout of Coral's own detection models. Same ops, same values.
    """
    from tensorflow.lite.tools import flatbuffer_utils as fbu

    model = fbu.convert_bytearray_to_object(bytearray(tflite_bytes))
    sub = model.subgraphs[0]
    codes = [model.operatorCodes[op.opcodeIndex].customCode for op in sub.operators]
    names = [c.decode() if c else fbu.opcode_to_name(model, op.opcodeIndex) for c, op in zip(codes, sub.operators)]
    if "TFLite_Detection_PostProcess" not in names:
        return tflite_bytes
    post = sub.operators[names.index("TFLite_Detection_PostProcess")]
    feeds = {int(t) for t in post.inputs}
    users = {}
    for op in sub.operators:
        for t in op.inputs:
            users[int(t)] = users.get(int(t), 0) + 1
    tail = [op for op, n in zip(sub.operators, names)
            if n == "DEQUANTIZE" and all(int(t) in feeds and users.get(int(t)) == 1 for t in op.outputs)]
    rest = [op for op in sub.operators if op is not post and all(op is not t for t in tail)]
    sub.operators = rest + tail + [post]
    return bytes(fbu.convert_object_to_bytearray(model))
