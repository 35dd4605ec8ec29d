"""QuantizeConfigs so tfmot can quantize every layer of an edgedet model.

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

Applying them to a model (unsharing, annotation, ``quantize_apply``, range calibration) is
:mod:`edgedet.quantize.qat_graph`.

Public API:
    quantize_scope() -> context manager   all custom objects for (de)serialising QAT models
    custom_objects() -> dict              the same objects as a dict
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

from edgedet.model.layers import WeightedFusion  # noqa: E402

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
            w = self.normalized_weights(inputs[0].dtype)
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
        # Nearest upsampling copies values: its output range is its input's. A fake-quant of its
        # own gives it a slightly different scale, and the converter then requantizes int8 ->
        # int8 after every upsample (a QUANTIZE op whose rounding differs between kernel sets).
        self._layer_quantize_map[keras.layers.UpSampling2D] = d8_registry.Default8BitQuantizeConfig([], [], False)


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
