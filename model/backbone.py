"""EfficientNet-B0..B6 and EfficientNet-Lite0..4 backbones (Functional tf_keras).

Follows the TF reference (tensorflow/tpu ``efficientnet_model.py`` / ``efficientnet_lite_builder.py``):
MBConv blocks with an expansion 1x1 conv, depthwise conv, optional squeeze-excite and a
projection 1x1 conv, each conv directly followed by BatchNormalization (so tfmot and the
TFLite converter fold BN). Lite variants use ReLU6, no squeeze-excite, and keep the stem
(32), the head (1280) and the first/last stage's repeats unscaled.

Layer names follow ``tf_keras.applications.EfficientNetB*`` (``stem_conv``, ``block2a_expand_conv``,
``block2a_se_reduce``, ``top_conv``, ``predictions`` ...) so those ImageNet weights load by name.
"""
from __future__ import annotations

import tf_keras as keras

from edgedet.model.layers import activation, batch_norm
from edgedet.model.scaling import BACKBONES, BlockArgs, round_filters, stage_plan  # noqa: F401


def _conv_init():
    # Reference: truncated normal, fan_out, scale 2 (what keras.applications uses too).
    return keras.initializers.VarianceScaling(2.0, "fan_out", "truncated_normal")


def mbconv(x, args: BlockArgs, filters_in: int, stride: int, act: str, drop_rate: float, prefix: str):
    """One MBConv block. ``x``: ``(B, H, W, filters_in)`` -> ``(B, H/stride, W/stride, filters_out)``."""
    inputs = x
    filters = filters_in * args.expand
    if args.expand != 1:
        x = keras.layers.Conv2D(filters, 1, padding="same", use_bias=False, kernel_initializer=_conv_init(),
                                name=prefix + "expand_conv")(x)
        x = batch_norm(prefix + "expand_bn")(x)
        x = activation(act, prefix + "expand_activation")(x)
    x = keras.layers.DepthwiseConv2D(args.kernel, strides=stride, padding="same", use_bias=False,
                                     depthwise_initializer=_conv_init(), name=prefix + "dwconv")(x)
    x = batch_norm(prefix + "bn")(x)
    x = activation(act, prefix + "activation")(x)
    if args.se_ratio:
        se_filters = max(1, int(filters_in * args.se_ratio))
        se = keras.layers.GlobalAveragePooling2D(keepdims=True, name=prefix + "se_squeeze")(x)
        se = keras.layers.Conv2D(se_filters, 1, padding="same", kernel_initializer=_conv_init(),
                                 name=prefix + "se_reduce")(se)
        se = activation(act, prefix + "se_reduce_activation")(se)
        se = keras.layers.Conv2D(filters, 1, padding="same", kernel_initializer=_conv_init(),
                                 name=prefix + "se_expand")(se)
        se = activation("sigmoid", prefix + "se_expand_activation")(se)
        x = keras.layers.Multiply(name=prefix + "se_excite")([x, se])
    x = keras.layers.Conv2D(args.filters_out, 1, padding="same", use_bias=False, kernel_initializer=_conv_init(),
                            name=prefix + "project_conv")(x)
    x = batch_norm(prefix + "project_bn")(x)
    if stride == 1 and filters_in == args.filters_out:
        if drop_rate > 0:
            # Drop-connect: drop the whole residual branch per sample while training.
            x = keras.layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=prefix + "drop")(x)
        x = keras.layers.Add(name=prefix + "add")([x, inputs])
    return x


def build_backbone(inputs, name: str, drop_connect_rate: float = 0.2, include_top: bool = False,
                   num_top_classes: int = 1000, act: str | None = None):
    """Apply an EfficientNet to ``inputs``.

    Args:
        inputs: ``(B, H, W, 3)`` normalised image tensor.
        name: key of :data:`BACKBONES`.
        drop_connect_rate: stochastic depth rate, linearly increased over blocks.
        include_top: also apply the classifier head (1x1 conv to 1280, pooling, dense).
        num_top_classes: classifier outputs (1000, or 1001 with a background class).
        act: override the activation (default swish, relu6 for Lite).

    Returns:
        ``[P3, P4, P5]`` with strides 8/16/32 (``(B, H/8, W/8, C3)`` ...), or the
        ``(B, num_top_classes)`` logits when ``include_top``.
    """
    spec = BACKBONES[name]
    act = act or ("relu6" if spec.lite else "swish")
    plan = stage_plan(spec)
    stem = plan[0][0].filters_in
    x = keras.layers.Conv2D(stem, 3, strides=2, padding="same", use_bias=False, kernel_initializer=_conv_init(),
                            name="stem_conv")(inputs)
    x = batch_norm("stem_bn")(x)
    x = activation(act, "stem_activation")(x)

    total = sum(r for _, r in plan)
    done = 0
    features = []
    for stage, (args, repeats) in enumerate(plan):
        for j in range(repeats):
            fin = args.filters_in if j == 0 else args.filters_out
            stride = args.stride if j == 0 else 1
            x = mbconv(x, args, fin, stride, act, drop_connect_rate * done / total,
                       prefix=f"block{stage + 1}{chr(ord('a') + j)}_")
            done += 1
        # Endpoints: last block at strides 8 (stage 3), 16 (stage 5) and 32 (stage 7).
        if stage in (2, 4, 6):
            features.append(x)
    if not include_top:
        return features
    head = 1280 if spec.lite else round_filters(1280, spec.width)
    x = keras.layers.Conv2D(head, 1, padding="same", use_bias=False, kernel_initializer=_conv_init(),
                            name="top_conv")(x)
    x = batch_norm("top_bn")(x)
    x = activation(act, "top_activation")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.layers.Dense(num_top_classes, name="predictions")(x)


def build_classifier(name: str, num_top_classes: int = 1000, image_size: int | None = None) -> keras.Model:
    """Backbone + ImageNet classifier as a model ``(B, S, S, 3) -> (B, num_top_classes)`` logits."""
    size = image_size or BACKBONES[name].resolution
    inputs = keras.Input((size, size, 3), name="image")
    logits = build_backbone(inputs, name, drop_connect_rate=0.0, include_top=True, num_top_classes=num_top_classes)
    return keras.Model(inputs, logits, name=name)
