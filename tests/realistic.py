"""A freshly initialised detector made to behave like a trained one, for the conversion tests.

Fresh, its activations shrink layer by layer and every class logit sits at the focal-loss
prior, so "int8 tracks float" would be vacuous. :func:`make_realistic` (1) moves every
BatchNorm's moving statistics halfway to the real statistics of a few images, and (2) rescales
the two predictor convs so class logits spread over a few units and box deltas over a few
tenths. Halfway, not all the way: a random deep network whose every layer is normalised to unit
variance is chaotic (a 1-LSB perturbation grows layer by layer), which trained detectors are not.
"""
from __future__ import annotations

import numpy as np

BN_MIX = 0.5


def make_realistic(model, images: np.ndarray, rng: np.random.Generator) -> None:
    """Set BN statistics from ``images`` ``(n, S, S, 3)`` and spread the predictor outputs."""
    bns = [layer for layer in model.layers if "BatchNormalization" in type(layer).__name__]
    for bn in bns:
        bn.momentum = BN_MIX
    model(images, training=True)  # moving mean/var := BN_MIX * init + (1 - BN_MIX) * data, layer by layer
    for bn in bns:
        bn.momentum = 0.99
    for kind, target_std, bias in (("class", 2.0, -2.0), ("box", 0.3, 0.0)):
        layer = model.get_layer(f"{kind}_net_predict_pw")
        k, b = layer.get_weights()
        k = rng.normal(0, 1.0, k.shape).astype(np.float32)
        layer.set_weights([k, np.full_like(b, bias)])
        outs = model(images[:2])
        idx = 0 if kind == "class" else len(outs) // 2
        std = float(np.std(outs[idx].numpy()))
        layer.set_weights([k * (target_std / max(std, 1e-6)), np.full_like(b, bias)])
