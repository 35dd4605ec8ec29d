"""The BiFPN, described as data (a pinned node list) and built by one loop over it.

Per google/automl ``efficientdet_keras.py`` (``FNode``/``OpAfterCombine``/``ResampleFeatureMap``):
each node resamples its inputs to its level (1x1 conv + BN when the width differs, then
stride-2 3x3 max-pool down or nearest 2x up), fuses them, then applies
activation -> depthwise-separable 3x3 conv (with bias) -> BN (automl's default
``conv_bn_act_pattern=False`` puts the activation *before* the conv).

Ops used (MAX_POOL_2D, RESIZE_NEAREST_NEIGHBOR via UpSampling2D, STRIDED_SLICE, ADD, MUL,
DEPTHWISE_CONV_2D, CONV_2D) all run on TFLite's XNNPACK delegate and the Edge TPU.

The node list is importable without TensorFlow (the analytic counter uses it); tf_keras is
imported inside the builders.
"""
from __future__ import annotations

from edgedet.runtime.anchors import MAX_LEVEL, MIN_LEVEL

# automl ``bifpn_config`` for P3-P7: (feature level, offsets into the growing feature list).
# Offsets 0..4 are the layer's inputs P3..P7; offset 5+i is the output of node i.
# Top-down: P6', P5', P4', P3(out); bottom-up: P4(out), P5(out), P6(out), P7(out).
NODES: tuple[tuple[int, tuple[int, ...]], ...] = (
    (6, (3, 4)),
    (5, (2, 5)),
    (4, (1, 6)),
    (3, (0, 7)),
    (4, (1, 7, 8)),
    (5, (2, 6, 9)),
    (6, (3, 5, 10)),
    (7, (4, 11)),
)


def _shape(t) -> tuple[int, int, int]:
    _, h, w, c = t.shape
    return int(h), int(w), int(c)


def _conv1x1_bn(x, width: int, prefix: str):
    import tf_keras as keras

    from edgedet.model.layers import batch_norm

    x = keras.layers.Conv2D(width, 1, padding="same", name=prefix + "_conv")(x)
    return batch_norm(prefix + "_bn")(x)


def resample(x, target_hw: tuple[int, int], width: int, prefix: str):
    """Bring ``x`` ``(B, h, w, c)`` to ``(B, H, W, width)`` for a neighbouring level.

    Down: (1x1 conv + BN if ``c != width``) then MaxPool 3x3 stride 2 SAME (``ceil(h/2)``).
    Up: (1x1 conv + BN if needed) then nearest 2x upsampling, cropped when the target is odd
    (``3 -> 6 -> 5``), which equals automl's nearest resize to the target size.
    """
    import tf_keras as keras

    h, w, c = _shape(x)
    th, tw = target_hw
    if c != width:
        x = _conv1x1_bn(x, width, prefix)
    if h > th:
        while h > th:
            x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name=f"{prefix}_down{h}")(x)
            h, w = (h + 1) // 2, (w + 1) // 2
    elif h < th:
        while h < th:
            x = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"{prefix}_up{h}")(x)
            h, w = 2 * h, 2 * w
        if (h, w) != (th, tw):
            x = keras.layers.Cropping2D(((0, h - th), (0, w - tw)), name=prefix + "_crop")(x)
    return x


def fuse_node(feats: list, level_of: list[int], node: tuple[int, tuple[int, ...]], width: int, fusion: str,
              act: str, prefix: str):
    """One BiFPN node: resample its inputs to ``level``, fuse, act, separable conv, BN.

    Returns ``(B, H_level, W_level, width)``.
    """
    import tf_keras as keras

    from edgedet.model.layers import WeightedFusion, activation, batch_norm

    level, offsets = node
    target = next(_shape(f)[:2] for f, lv in zip(feats, level_of) if lv == level)
    inputs = [resample(feats[o], target, width, f"{prefix}_in{o}") for o in offsets]
    x = WeightedFusion(fusion, name=prefix + "_fuse")(inputs)
    x = activation(act, prefix + "_act")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=prefix + "_dw")(x)
    x = keras.layers.Conv2D(width, 1, padding="same", name=prefix + "_pw")(x)
    return batch_norm(prefix + "_bn")(x)


def bifpn_layer(feats: list, width: int, fusion: str, act: str, index: int) -> list:
    """One BiFPN layer over ``[P3..P7]``; returns the new ``[P3..P7]`` (all ``width`` channels)."""
    feats = list(feats)
    level_of = list(range(MIN_LEVEL, MAX_LEVEL + 1))
    for i, node in enumerate(NODES):
        feats.append(fuse_node(feats, level_of, node, width, fusion, act, f"fpn{index}_node{i}"))
        level_of.append(node[0])
    # Each level's output is the last node computed at that level.
    return [feats[max(i for i, lv in enumerate(level_of) if lv == level)]
            for level in range(MIN_LEVEL, MAX_LEVEL + 1)]


def build_bifpn(backbone_feats: list, width: int, num_layers: int, fusion: str, act: str) -> list:
    """P3-P5 from the backbone -> ``num_layers`` BiFPN layers -> ``[P3..P7]``.

    P6 is P5 through (1x1 conv + BN to ``width`` if needed) and a stride-2 max-pool; P7 is P6
    max-pooled again, as in the official implementation.

    Args:
        backbone_feats: ``[(B, S/8, S/8, C3), (B, S/16, S/16, C4), (B, S/32, S/32, C5)]``.

    Returns:
        ``[(B, ceil(S/2**l), ceil(S/2**l), width) for l in 3..7]``.
    """
    p3, p4, p5 = backbone_feats
    h5, w5, _ = _shape(p5)
    p6 = resample(p5, ((h5 + 1) // 2, (w5 + 1) // 2), width, "p6_resample")
    h6, w6, _ = _shape(p6)
    p7 = resample(p6, ((h6 + 1) // 2, (w6 + 1) // 2), width, "p7_resample")
    feats = [p3, p4, p5, p6, p7]
    for i in range(num_layers):
        feats = bifpn_layer(feats, width, fusion, act, i)
    return feats
