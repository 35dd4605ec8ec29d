"""edgedet.model: the EfficientDet family (tf_keras Functional).

``get_config``/``ModelConfig`` are TensorFlow-free; ``build_model``, ``custom_objects``,
``count_macs`` and ``model_stats`` import tf_keras on first use.

    from edgedet.model import get_config, build_model
    cfg = get_config("lite0", num_classes=3)
    model = build_model(cfg)   # input (B, S, S, 3) normalised; 10 outputs class_p3..box_p7
"""
from __future__ import annotations

from edgedet.model.config import VARIANTS, ModelConfig, get_config, variant_names

_LAZY = {
    "build_model": "edgedet.model.efficientdet",
    "count_macs": "edgedet.model.efficientdet",
    "model_stats": "edgedet.model.efficientdet",
    "OUTPUT_NAMES": "edgedet.model.efficientdet",
    "custom_objects": "edgedet.model.layers",
    "WeightedFusion": "edgedet.model.layers",
}

__all__ = ["VARIANTS", "ModelConfig", "get_config", "variant_names", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgedet.model' has no attribute {name!r}")
