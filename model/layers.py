"""Custom Keras layers of the model (only one: the BiFPN fusion) and small layer helpers.

Everything else in the graph is a stock tf_keras layer (Conv2D, DepthwiseConv2D,
BatchNormalization, Activation/ReLU, MaxPooling2D, UpSampling2D, Cropping2D, Multiply,
Dropout), which tfmot, the TFLite converter and tf2onnx all know.
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3


@keras.utils.register_keras_serializable(package="edgedet")
class WeightedFusion(keras.layers.Layer):
    """BiFPN feature fusion of ``n`` same-shaped inputs.

    ``fast``:    ``O = sum_i relu(w_i) * I_i / (1e-4 + sum_j relu(w_j))`` (EfficientDet eq. 3).
    ``softmax``: ``O = sum_i softmax(w)_i * I_i``.
    ``sum``:     ``O = sum_i I_i`` (no weights; used by Lite and D6/D7).

    The sum is written as a chain of binary adds (TFLite ADD), not ``tf.add_n``, because
    ADD_N runs neither on XNNPACK nor on the Edge TPU. The normalised weights depend only on
    variables, so the converter folds them to constants (one scalar MUL per input).

    Args:
        method: ``"fast"``, ``"softmax"`` or ``"sum"``.
        epsilon: added to the weight sum for ``fast``.

    Call:
        inputs: list of ``n >= 2`` tensors of identical shape ``(B, H, W, C)``.
        Returns one ``(B, H, W, C)`` tensor.
    """

    METHODS = ("fast", "softmax", "sum")

    def __init__(self, method: str = "fast", epsilon: float = 1e-4, **kwargs):
        super().__init__(**kwargs)
        if method not in self.METHODS:
            raise ValueError(f"WeightedFusion method must be one of {self.METHODS}, got {method!r}")
        self.method = method
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) < 2:
            raise ValueError("WeightedFusion needs a list of at least 2 inputs")
        self.num_inputs = len(input_shape)
        if self.method != "sum":
            self.fusion_weights = self.add_weight(
                name="fusion_weights", shape=(self.num_inputs,), initializer="ones", trainable=True
            )
        super().build(input_shape)

    def normalized_weights(self, dtype):
        """``(n,)`` fusion weights: ReLU then divided by their sum (``fast``) or softmax."""
        w = tf.cast(self.fusion_weights, dtype)
        if self.method == "fast":
            w = tf.nn.relu(w)
            return w / (tf.reduce_sum(w) + self.epsilon)
        return tf.nn.softmax(w)

    def call(self, inputs):
        if self.method == "sum":
            out = inputs[0]
            for x in inputs[1:]:
                out = out + x
            return out
        w = self.normalized_weights(inputs[0].dtype)
        out = inputs[0] * w[0]
        for i in range(1, len(inputs)):
            out = out + inputs[i] * w[i]
        return out

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        config = super().get_config()
        config.update({"method": self.method, "epsilon": self.epsilon})
        return config


def activation(kind: str, name: str) -> keras.layers.Layer:
    """The activation layer for ``kind`` (``swish``/``relu6``/``relu``/``sigmoid``/``linear``).

    ReLU6 is a ``ReLU(max_value=6)`` layer because that is the form tfmot's Conv+BN+ReLU
    folding patterns and the TFLite fused-activation pass recognise.
    """
    if kind == "relu6":
        return keras.layers.ReLU(max_value=6.0, name=name)
    if kind == "relu":
        return keras.layers.ReLU(name=name)
    return keras.layers.Activation(kind, name=name)


def batch_norm(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def custom_objects() -> dict:
    """Custom layers for ``tf_keras.models.load_model(..., custom_objects=...)``."""
    return {"WeightedFusion": WeightedFusion, "edgedet>WeightedFusion": WeightedFusion}
