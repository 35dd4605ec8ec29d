"""Making an edgedet model quantization-aware with the QuantizeConfigs of :mod:`edgedet.quantize.configs`.

Shared layers: the class/box nets reuse one depthwise/pointwise pair on P3..P7 with a BN per
level. tfmot refuses to match fold patterns on a layer with several inbound nodes, which would
leave every head BN unfolded. :func:`prepare_for_qat` therefore gives every call of a shared
layer its own copy (same initial weights; suffix ``_p3``..``_p7``). The deployed TFLite graph is
unchanged by this: the converter duplicates the head weights per level anyway once each level's
BN is folded in.

Public API:
    prepare_for_qat(model) -> model       unshare + swap fusion layers (weights copied)
    annotate(model) -> annotated model    prepare_for_qat + quantize_annotate_layer on all layers
    quantize_model(model) -> QAT model    annotate + quantize_apply inside quantize_scope()
    unfolded_batchnorms(qat_model)        BN layers tfmot did not fold into a conv
    calibrate_ranges(qat_model, batches)  set fake-quant ranges from data before fine-tuning
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
from tensorflow_model_optimization.python.core.quantization.keras import quantizers  # noqa: E402
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (  # noqa: E402
    default_8bit_quantize_registry as d8_registry,
)

from edgedet.errors import ConfigError  # noqa: E402
from edgedet.model.layers import WeightedFusion  # noqa: E402
from edgedet.quantize.configs import (  # noqa: E402
    EdgedetQuantizeScheme,
    FusionQuantizeConfig,
    OutputQuantizeConfig,
    QuantizedWeightedFusion,
    quantize_scope,
)
from edgedet.runtime.anchors import LEVELS  # noqa: E402


# --------------------------------------------------------------------------- graph rebuild
def _copy_name(layer, call_index: int) -> str:
    # The heads are called once per pyramid level, in P3..P7 order.
    if len(layer._inbound_nodes) == len(LEVELS):
        return f"{layer.name}_p{LEVELS[call_index]}"
    return f"{layer.name}_{call_index}"


def prepare_for_qat(model: keras.Model, annotate: bool = False) -> keras.Model:
    """A copy of ``model`` in the form tfmot quantizes well (same weights; same function except the
    fusion layers' intermediate fake-quant).

    * each call of a shared layer becomes its own layer (``name_pL``), so Conv+BN folding
      patterns match per level;
    * ``WeightedFusion`` becomes :class:`QuantizedWeightedFusion`;
    * with ``annotate``, every layer is wrapped in ``quantize_annotate_layer`` with its
      QuantizeConfig (one graph rebuild instead of two: they are slow on 2 cores).

    Args:
        model: float edgedet Functional model, input ``(B, S, S, 3)``, 10 outputs.

    Returns:
        A Functional model with identical outputs and output names.
    """
    annotate_layer = tfmot.quantization.keras.quantize_annotate_layer
    new_inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.node.layer.name) for t in model.inputs]
    tensors: dict[str, list] = {}
    for x, y in zip(model.inputs, new_inputs):
        tensors[str(id(x))] = [y] * model._tensor_usage_count[str(id(x))]
    copies: list[tuple] = []  # (new_layer, old_layer) for weight transfer
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.is_input:
                continue
            layer = node.layer
            config = layer.get_config()
            if len(layer._inbound_nodes) > 1:
                config["name"] = _copy_name(layer, layer._inbound_nodes.index(node))
            cls = QuantizedWeightedFusion if isinstance(layer, WeightedFusion) else layer.__class__
            new_layer = cls.from_config(config)
            if annotate:
                if isinstance(layer, keras.layers.BatchNormalization):
                    qconfig = None if _foldable_bn_node(model, node) else OutputQuantizeConfig()
                else:
                    qconfig = _config_for(new_layer)
                new_layer = annotate_layer(new_layer, qconfig) if qconfig is not None else annotate_layer(new_layer)
            args, kwargs = node.map_arguments(tensors)
            outputs = new_layer(*args, **kwargs)
            copies.append((new_layer, layer))
            for x_id, y in zip(node.flat_output_ids, tf.nest.flatten(outputs)):
                tensors[x_id] = [y] * model._tensor_usage_count.get(x_id, 1)
    outs = [tensors[str(id(t))][0] for t in model.outputs]
    new = keras.Model(new_inputs, outs, name=model.name)
    for new_layer, old_layer in copies:
        weights = old_layer.get_weights()
        if weights:
            own = new_layer.get_weights()
            # QuantizedWeightedFusion has extra (min/max) variables after the float ones.
            new_layer.set_weights(weights + own[len(weights):])
    return new


# --------------------------------------------------------------------------- annotation
_REGISTRY = d8_registry.Default8BitQuantizeRegistry()


def _foldable_bn_node(model, node) -> bool:
    """True if this call of a BN directly follows a linear conv whose output nothing else reads.

    Those are the Conv/DepthwiseConv+BN pairs tfmot folds (and it skips any layer that carries
    a custom config, so only a BN that cannot be folded gets one).
    """
    parents = node.parent_nodes
    if len(parents) != 1:
        return False
    conv = parents[0].layer
    if not isinstance(conv, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
        return False
    if getattr(conv.activation, "__name__", "") != "linear":
        return False
    return all(model._tensor_usage_count.get(x_id, 1) == 1 for x_id in parents[0].flat_output_ids)


def _config_for(layer):
    """The QuantizeConfig for ``layer``, or None to let tfmot's registry choose."""
    if isinstance(layer, QuantizedWeightedFusion):
        return FusionQuantizeConfig()
    if isinstance(layer, keras.layers.BatchNormalization):
        return OutputQuantizeConfig()  # prepare_for_qat passes None for the foldable ones
    if isinstance(layer, keras.layers.Multiply):
        return OutputQuantizeConfig()
    if isinstance(layer, keras.layers.InputLayer) or _REGISTRY.supports(layer):
        return None
    raise ConfigError(
        f"layer {layer.name!r} ({type(layer).__name__}) has no quantization config; add one in edgedet/quantize/configs.py"
    )


def annotate(model: keras.Model) -> keras.Model:
    """Prepare (:func:`prepare_for_qat`) and annotate every layer of ``model`` for QAT.

    Raises:
        ConfigError: already a QAT model, or a layer type without a quantization config.
    """
    from edgedet.convert.tflite_converter import is_qat_model

    if is_qat_model(model):
        raise ConfigError(f"model {model.name!r} is already quantization-aware (QAT); quantize its float checkpoint instead")
    for layer in model.layers:  # fail fast, before the (slow) rebuild
        if not isinstance(layer, WeightedFusion):
            _config_for(layer)
    with quantize_scope():
        return prepare_for_qat(model, annotate=True)


def quantize_model(model: keras.Model) -> keras.Model:
    """Float edgedet model -> QAT model (``quantize_apply`` of :func:`annotate`).

    The result has the same inputs/outputs; output layers are named ``quant_class_p3`` ...
    (``edgedet.convert.tflite_converter.output_names`` strips the prefix).
    """
    annotated = annotate(model)
    with quantize_scope():
        return tfmot.quantization.keras.quantize_apply(annotated, scheme=EdgedetQuantizeScheme())


def unfolded_batchnorms(qat_model: keras.Model) -> list[str]:
    """Names of BN layers in a QAT model that tfmot did NOT fold into the preceding conv.

    Folded means: the BN's producer is a wrapped Conv2D/DepthwiseConv2D whose activation was
    replaced by tfmot's ``NoOpActivation`` (no fake-quant between conv and BN), which is what
    the TFLite converter then folds into one int8 conv. Empty for edgedet models.
    """
    bad = []
    for layer in qat_model.layers:
        inner = getattr(layer, "layer", None)
        if not isinstance(inner, keras.layers.BatchNormalization):
            continue
        src = layer._inbound_nodes[0].inbound_layers
        conv = getattr(src, "layer", None)
        act = conv.get_config().get("activation") if conv is not None else None
        if not (isinstance(conv, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)) and "NoOpActivation" in str(act)):
            bad.append(inner.name)
    return bad


# --------------------------------------------------------------------------- range calibration
def calibrate_ranges(qat_model: keras.Model, batches) -> int:
    """Set every activation range of a fresh QAT model from data (min/max over ``batches``).

    tfmot starts activation ranges at [-6, 6] and moves them with an EMA of decay 0.999, so a
    short fine-tune (a few hundred steps) would end with ranges that are still mostly that
    guess: small tensors (SE gates, head features) quantized with a 0.047 step, large logits
    clipped. Like TFLite's post-training calibrator, this takes the min/max over all calibration
    values (BN in inference mode, drop-connect off), so QAT starts from the PTQ model and the
    EMA then only refines.

    Args:
        qat_model: from :func:`quantize_model`.
        batches: iterable of normalised float32 ``(B, S, S, 3)`` arrays.

    Returns:
        The number of range variables set.
    """
    import contextlib

    from tensorflow_model_optimization.python.core.quantization.keras import quant_ops

    def all_values_call(self, inputs, training, weights, **kwargs):
        return quant_ops.AllValuesQuantize(inputs, weights["min_var"], weights["max_var"], is_training=training,
                                           num_bits=self.num_bits, symmetric=self.symmetric,
                                           narrow_range=self.narrow_range)

    ranges = [v for v in qat_model.non_trainable_weights if v.name.split("/")[-1].split(":")[0].endswith(("_min", "_max"))]
    for v in ranges:
        v.assign(tf.zeros_like(v))
    inner = [getattr(layer, "layer", layer) for layer in qat_model.layers]
    saved_bn = [(layer, layer.trainable) for layer in inner if isinstance(layer, keras.layers.BatchNormalization)]
    saved_drop = [(layer, layer.rate) for layer in inner if isinstance(layer, keras.layers.Dropout)]
    original = quantizers.MovingAverageQuantizer.__call__
    with contextlib.ExitStack() as stack:
        quantizers.MovingAverageQuantizer.__call__ = all_values_call
        stack.callback(setattr, quantizers.MovingAverageQuantizer, "__call__", original)
        for layer, _ in saved_bn:
            layer.trainable = False
        for layer, _ in saved_drop:
            layer.rate = 0.0
        try:
            for x in batches:
                qat_model(tf.constant(x), training=True)
        finally:
            for layer, flag in saved_bn:
                layer.trainable = flag
            for layer, rate in saved_drop:
                layer.rate = rate
    return len(ranges)
