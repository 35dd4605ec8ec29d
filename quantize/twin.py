"""The float twin of a QAT run: its fine-tuned weights in the float model, no fake quantization.

A QAT run trains more epochs than its float parent, so "QAT int8 vs float baseline" mixes two
effects: the extra training and the quantization. The twin separates them:

* twin - float baseline: what the extra (QAT) training did to the weights;
* QAT int8 - twin: the quantization loss proper (the README's accuracy claims use this one).

tfmot's ``QuantizeWrapperV2`` keeps the wrapped layer (same name, same variables) as ``.layer``,
and a ``QuantizeLayer`` holds only ranges. QAT gives each call of a shared head layer its own copy
(``prepare_for_qat``: ``class_net_conv0_dw_p3`` ...), which fine-tuning lets drift apart, so the
twin is the float graph after the same unsharing, with every wrapped layer's weights copied in.
"""
from __future__ import annotations

import os

from edgedet.errors import ModelFileError


def float_twin(qat_model, cfg):
    """A float tf_keras model (``prepare_for_qat(build_model(cfg))``) with ``qat_model``'s weights.

    Args:
        qat_model: a ``quantize_apply`` model (input (B, S, S, 3), 10 raw outputs).
        cfg: its :class:`edgedet.model.config.ModelConfig`.

    Raises:
        ModelFileError: a float layer has no wrapped counterpart (different architecture).
    """
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from edgedet.model import build_model
    from edgedet.quantize.qat_graph import prepare_for_qat

    model = prepare_for_qat(build_model(cfg))
    # A wrapper owns its layer's quantizable variables (``stem_conv/kernel``) next to its own
    # ranges (``quant_stem_conv/kernel_min``); the wrapped layer keeps the rest (BN statistics).
    values = {}
    for var in qat_model.weights:
        key = "/".join(var.name.split("/")[-2:])
        if not key.startswith("quant_") and not key.startswith("quantize_layer"):
            values[key] = var
    missing = []
    for layer in model.layers:
        for var in layer.weights:
            key = f"{layer.name}/{var.name.split('/')[-1]}"
            if key in values:
                var.assign(values[key])
            else:
                missing.append(key)
    if missing:
        raise ModelFileError(f"the QAT model has no value for {len(missing)} float variable(s): {', '.join(missing[:3])}")
    return model


def load_twin(run_dir):
    """``(float twin model, RunInfo)`` of a QAT run folder (see :func:`float_twin`)."""
    from edgedet.quantize.qat import load_qat_model

    qat_model, info = load_qat_model(run_dir)
    return float_twin(qat_model, info.config), info
