"""QuantizeConfigs and graph preparation so tfmot can quantize every layer of an edgedet model.

tfmot's default 8-bit registry knows Conv2D, DepthwiseConv2D, Activation (relu/relu6/swish
output-quantized; sigmoid/linear pass-through because TFLite gives LOGISTIC a fixed output
scale), ReLU, Add, MaxPooling2D, UpSampling2D, GlobalAveragePooling2D, Dropout, Cropping2D,
and folds ``Conv2D|DepthwiseConv2D -> BatchNormalization [-> ReLU|Activation(relu)]`` so no
fake-quant sits between a conv and its BN (the converter folds BN into the conv weights; conv
kernels use per-channel symmetric weight quantizers, so the per-channel BN scale commutes
with the weight quantization). Our models add:

* ``WeightedFusion`` (BiFPN, custom): replaced by :class:`QuantizedWeightedFusion`, the same
  maths with a moving-average fake-quant on every intermediate the TFLite graph materialises
  (``x_i * w_i`` and each partial sum), so the full-integer model has ranges for all of them.
* ``Multiply`` (squeeze-excite): output quantized.
* ``BatchNormalization`` that does not directly follow a single-use conv: output quantized
  (becomes an int8 MUL+ADD pair in TFLite; none are left in our models after unsharing).
* Shared layers: the class/box nets reuse one depthwise/pointwise pair on P3..P7 with a BN per
  level. tfmot refuses to match fold patterns on a layer with several inbound nodes, which
  would leave every head BN unfolded. :func:`prepare_for_qat` therefore gives every call of a
  shared layer its own copy (same initial weights; suffix ``_p3``..``_p7``). The deployed
  TFLite graph is unchanged by this: the converter duplicates the head weights per level
  anyway once each level's BN is folded in.

Public API:
    prepare_for_qat(model) -> model       unshare + swap fusion layers (weights copied)
    annotate(model) -> annotated model    prepare_for_qat + quantize_annotate_layer on all layers
    quantize_model(model) -> QAT model    annotate + quantize_apply inside quantize_scope()
    quantize_scope() -> context manager   all custom objects for (de)serialising QAT models
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
from tensorflow_model_optimization.python.core.quantization.keras import quantizers  # noqa: E402
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (  # noqa: E402
    default_8bit_quantize_configs as d8_configs,
    default_8bit_quantize_registry as d8_registry,
)
from tensorflow_model_optimization.python.core.keras import utils as tfmot_utils  # noqa: E402

from edgedet.errors import ConfigError  # noqa: E402
from edgedet.model.layers import WeightedFusion  # noqa: E402
from edgedet.runtime.anchors import LEVELS  # noqa: E402

QuantizeConfig = tfmot.quantization.keras.QuantizeConfig


def _activation_quantizer():
    # The TFLite int8 activation scheme: per-tensor, asymmetric, full range.
    return quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)


@keras.utils.register_keras_serializable(package="edgedet")
class QuantizedWeightedFusion(WeightedFusion):
    """:class:`WeightedFusion` with fake-quant on every intermediate tensor (QAT only).

    Same weights (``fusion_weights``) and same output as the float layer in float mode. In the
    TFLite graph a fast/softmax fusion of ``n`` inputs is ``n`` MULs by a folded scalar and
    ``n-1`` ADDs; a sum fusion is ``n-1`` ADDs. Each of those tensors except the final one
    (which the wrapper's output quantizer covers) gets a moving-average min/max here.

    Call:
        inputs: list of ``n`` tensors ``(B, H, W, C)``; returns ``(B, H, W, C)``.
    """

    def build(self, input_shape):
        super().build(input_shape)
        n = len(input_shape)
        self._quantizer = _activation_quantizer()
        names = []
        if self.method != "sum":
            names += [f"scaled{i}" for i in range(n)]
        names += [f"partial{i}" for i in range(1, n - 1)]  # last sum = layer output
        self._fq_vars = {name: self._quantizer.build(None, name, self) for name in names}

    def _fq(self, x, name, training):
        vars_ = self._fq_vars[name]
        return tfmot_utils.smart_cond(
            training,
            lambda: self._quantizer(x, True, weights=vars_),
            lambda: self._quantizer(x, False, weights=vars_),
        )

    def call(self, inputs, training=None):
        if training is None:
            training = keras.backend.learning_phase()
        if self.method == "sum":
            terms = list(inputs)
        else:
            w = tf.cast(self.fusion_weights, inputs[0].dtype)
            if self.method == "fast":
                w = tf.nn.relu(w)
                w = w / (tf.reduce_sum(w) + self.epsilon)
            else:
                w = tf.nn.softmax(w)
            terms = [self._fq(x * w[i], f"scaled{i}", training) for i, x in enumerate(inputs)]
        out = terms[0]
        for i in range(1, len(terms)):
            out = out + terms[i]
            if i < len(terms) - 1:
                out = self._fq(out, f"partial{i}", training)
        return out


class DepthwiseKernelQuantizer(quantizers.LastValueQuantizer):
    """Per-channel symmetric int8 for a depthwise kernel ``(kh, kw, C, M)``, one range per C*M.

    tfmot's default quantizes along the last axis, which for a depthwise kernel is the depth
    multiplier (1): one range for the whole kernel. The converter then folds the following BN
    (a different scale per channel) into the kernel and re-quantizes it per channel, so the
    device's weights differ from the ones QAT trained against by a few steps. With a range per
    channel the BN scale commutes with the quantization and QAT sees the device's weights.
    """

    def __init__(self):
        super().__init__(num_bits=8, per_axis=True, symmetric=True, narrow_range=True)

    def build(self, tensor_shape, name, layer):
        channels = int(tensor_shape[-2]) * int(tensor_shape[-1])
        min_w = layer.add_weight(name + "_min", shape=(channels,), initializer=keras.initializers.Constant(-6.0),
                                 trainable=False)
        max_w = layer.add_weight(name + "_max", shape=(channels,), initializer=keras.initializers.Constant(6.0),
                                 trainable=False)
        return {"min_var": min_w, "max_var": max_w}

    def __call__(self, inputs, training, weights, **kwargs):
        from tensorflow_model_optimization.python.core.quantization.keras import quant_ops

        kh, kw, c, m = (int(d) for d in inputs.shape)
        flat = tf.reshape(inputs, (kh, kw, 1, c * m))  # rank 4, channels last: what LastValueQuantize reduces
        out = quant_ops.LastValueQuantize(flat, weights["min_var"], weights["max_var"], is_training=training,
                                          num_bits=8, per_channel=True, symmetric=True, narrow_range=True)
        return tf.reshape(out, (kh, kw, c, m))

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls()


class DepthwiseQuantizeConfig(d8_registry.Default8BitQuantizeConfig):
    """DepthwiseConv2D: per-channel kernel ranges (see :class:`DepthwiseKernelQuantizer`)."""

    def __init__(self, weight_attrs=("depthwise_kernel",), activation_attrs=("activation",), quantize_output=False):
        super().__init__(list(weight_attrs), list(activation_attrs), quantize_output)
        self.weight_quantizer = DepthwiseKernelQuantizer()

    def get_config(self):
        return {"weight_attrs": list(self.weight_attrs), "activation_attrs": list(self.activation_attrs),
                "quantize_output": self.quantize_output}


class OutputQuantizeConfig(d8_configs.Default8BitOutputQuantizeConfig):
    """Quantize only the layer output (Multiply, fusion, standalone BN)."""


class FusionQuantizeConfig(QuantizeConfig):
    """For :class:`QuantizedWeightedFusion`: intermediates are quantized inside the layer,
    the output here. The fusion weights are not fake-quantized: after normalisation they are
    scalar constants that the converter quantizes on its own (a scalar loses < 1/255 of itself)."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [_activation_quantizer()]

    def get_config(self):
        return {}


class _Registry(d8_registry.Default8BitQuantizeRegistry):
    """tfmot's default registry with per-channel depthwise kernels.

    Given through the scheme (not as an annotation), because tfmot skips its Conv+BN folding
    transforms for any layer that carries a custom annotation config.
    """

    def __init__(self):
        super().__init__()
        self._layer_quantize_map[keras.layers.DepthwiseConv2D] = DepthwiseQuantizeConfig()


class EdgedetQuantizeScheme(tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme):
    """The default 8-bit scheme (TFLite int8 layout transforms) with :class:`_Registry`."""

    def get_quantize_registry(self):
        return _Registry()


def custom_objects() -> dict:
    """Everything needed to deserialise a float or QAT edgedet model."""
    from edgedet.model import custom_objects as model_objects

    objs = dict(model_objects())
    objs.update({
        "QuantizedWeightedFusion": QuantizedWeightedFusion,
        "edgedet>QuantizedWeightedFusion": QuantizedWeightedFusion,
        "OutputQuantizeConfig": OutputQuantizeConfig,
        "FusionQuantizeConfig": FusionQuantizeConfig,
        "DepthwiseQuantizeConfig": DepthwiseQuantizeConfig,
        "DepthwiseKernelQuantizer": DepthwiseKernelQuantizer,
    })
    return objs


def quantize_scope():
    """``tfmot.quantization.keras.quantize_scope`` with all edgedet custom objects."""
    return tfmot.quantization.keras.quantize_scope(custom_objects())


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
