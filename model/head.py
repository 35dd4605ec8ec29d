"""Class and box nets, shared across P3-P7 with per-level BatchNorm (as automl ClassNet/BoxNet).

The same depthwise-separable conv layers are applied to every level; each level has its
own BN layers (feature statistics differ per level). Per layer: sep conv -> BN -> activation.
The predictor is a separable conv too; the class bias starts at ``-log((1 - 0.01) / 0.01)`` so
every anchor initially predicts probability 0.01 (focal-loss prior).

Outputs stay per level and separate; each passes through a named linear ``Activation``
(``class_p3`` ... ``box_p7``) so the names survive save/load and export.
"""
from __future__ import annotations

import math

import tf_keras as keras

from edgedet.model.layers import activation, batch_norm

PRIOR_PROBABILITY = 0.01


class _SepConv:
    """A shared depthwise (3x3, no bias) + pointwise (1x1, bias) conv pair."""

    def __init__(self, filters: int, prefix: str, bias_init="zeros"):
        self.dw = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=prefix + "_dw")
        self.pw = keras.layers.Conv2D(filters, 1, padding="same", bias_initializer=bias_init, name=prefix + "_pw")

    def __call__(self, x):
        return self.pw(self.dw(x))


def _net(feats: list, kind: str, width: int, repeats: int, out_filters: int, bias_init, act: str,
         min_level: int = 3) -> list:
    convs = [_SepConv(width, f"{kind}_net_conv{i}") for i in range(repeats)]
    predict = _SepConv(out_filters, f"{kind}_net_predict", bias_init)
    outputs = []
    for k, x in enumerate(feats):
        level = min_level + k
        for i, conv in enumerate(convs):
            x = conv(x)
            x = batch_norm(f"{kind}_net_bn{i}_p{level}")(x)
            x = activation(act, f"{kind}_net_act{i}_p{level}")(x)
        x = predict(x)
        outputs.append(keras.layers.Activation("linear", name=f"{kind}_p{level}")(x))
    return outputs


def build_heads(feats: list, width: int, repeats: int, num_classes: int, num_anchors: int, act: str):
    """Apply the class and box nets to ``[P3..P7]`` (each ``(B, H_l, W_l, width)``).

    Returns:
        ``(class_outputs, box_outputs)``: lists over P3..P7 of ``(B, H_l, W_l, num_anchors*num_classes)``
        logits and ``(B, H_l, W_l, num_anchors*4)`` box deltas ``(ty, tx, th, tw)``.
    """
    prior = keras.initializers.Constant(-math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY))
    cls = _net(feats, "class", width, repeats, num_anchors * num_classes, prior, act)
    box = _net(feats, "box", width, repeats, num_anchors * 4, "zeros", act)
    return cls, box
