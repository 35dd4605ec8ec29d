"""EfficientDet variants as one frozen dataclass per row of a table.

Figures follow google/automl ``efficientdet/hparams_config.py`` (the official table, not the
paper's first version): BiFPN layers 3/4/5/6/7/7/8/8, widths 64/88/112/160/224/288/384/384,
head layers 3/3/3/4/4/4/5/5, input 512 + 128*phi (D7: 1536 on the D6 backbone). D6/D7 use an
unweighted sum for stability and D7 a larger anchor scale (5.0), as automl does; Lite rows
use ReLU6, sum fusion, mean/std 127/128 and anchor scale 3.0 (Lite0-2) or 4.0 (Lite3-4).

No TensorFlow is imported here, so ``edgedet info --help`` and the runtime stay light.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from edgedet.errors import ConfigError, did_you_mean
from edgedet.runtime.anchors import AnchorConfig

# ImageNet statistics in pixel units, for the EfficientNet-B (D-series) backbones.
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
LITE_MEAN = (127.0, 127.0, 127.0)
LITE_STD = (128.0, 128.0, 128.0)


@dataclass(frozen=True)
class ModelConfig:
    """One EfficientDet variant.

    Attributes:
        name: variant name, e.g. ``"d0"`` or ``"lite0"``.
        backbone: backbone name, a key of ``edgedet.model.backbone.BACKBONES``.
        image_size: square input side S in pixels; the model takes ``(B, S, S, 3)``.
        fpn_width: channels in every BiFPN node and head conv.
        fpn_layers: number of stacked BiFPN layers.
        head_layers: separable convs in the class/box nets before the predictor.
        activation: ``"swish"`` or ``"relu6"`` (used in backbone, BiFPN and heads).
        fusion: BiFPN fusion, ``"fast"`` (normalised weights), ``"softmax"`` or ``"sum"``.
        anchor_scale: base anchor size in strides.
        mean: per-channel pixel mean; the model's input is ``(pixel - mean) / std``.
        std: per-channel pixel std.
        num_classes: number of object classes (no background class).
        drop_connect_rate: backbone stochastic-depth rate (training only).
        size_multiple: allowed image sizes are multiples of this (the /128 or /64 pyramid).
    """

    name: str
    backbone: str
    image_size: int
    fpn_width: int
    fpn_layers: int
    head_layers: int
    activation: str = "swish"
    fusion: str = "fast"
    anchor_scale: float = 4.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    num_classes: int = 90
    drop_connect_rate: float = 0.2
    size_multiple: int = 128

    @property
    def anchor_config(self) -> AnchorConfig:
        """Anchor layout (P3-P7, 3 scales x 3 ratios) for this variant."""
        return AnchorConfig(anchor_scale=self.anchor_scale)

    @property
    def num_anchors(self) -> int:
        """Anchors per spatial position (9)."""
        return self.anchor_config.num_anchors

    @property
    def is_lite(self) -> bool:
        return self.activation == "relu6"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _d(phi: int, backbone: str, size: int, width: int, fpn: int, head: int, **kw) -> ModelConfig:
    return ModelConfig(f"d{phi}", backbone, size, width, fpn, head, **kw)


def _lite(i: int, size: int, width: int, fpn: int, head: int, anchor_scale: float) -> ModelConfig:
    return ModelConfig(
        f"lite{i}", f"efficientnet-lite{i}", size, width, fpn, head, activation="relu6", fusion="sum",
        anchor_scale=anchor_scale, mean=LITE_MEAN, std=LITE_STD, size_multiple=64,
    )


# The table. Keep rows in display order (``edgedet info`` lists them in this order).
VARIANTS: dict[str, ModelConfig] = {
    c.name: c
    for c in (
        _d(0, "efficientnet-b0", 512, 64, 3, 3),
        _d(1, "efficientnet-b1", 640, 88, 4, 3),
        _d(2, "efficientnet-b2", 768, 112, 5, 3),
        _d(3, "efficientnet-b3", 896, 160, 6, 4),
        _d(4, "efficientnet-b4", 1024, 224, 7, 4),
        _d(5, "efficientnet-b5", 1280, 288, 7, 4),
        _d(6, "efficientnet-b6", 1280, 384, 8, 5, fusion="sum"),
        _d(7, "efficientnet-b6", 1536, 384, 8, 5, fusion="sum", anchor_scale=5.0),
        _lite(0, 320, 64, 3, 3, 3.0),
        _lite(1, 384, 88, 4, 3, 3.0),
        _lite(2, 448, 112, 5, 3, 3.0),
        _lite(3, 512, 160, 6, 4, 4.0),
        _lite(4, 640, 224, 7, 4, 4.0),
        # The smallest useful detector: the ImageNet Lite0 backbone (from its PyPI wheel) at 128 px
        # with a narrow BiFPN and heads; trains to AP50 0.9 on the synthetic set in 5 CPU minutes
        # with the backbone frozen (benchmarks/bench_train_synth.py). Not a published variant.
        ModelConfig(
            "tiny", "efficientnet-lite0", 128, 32, 2, 2, activation="relu6", fusion="sum",
            anchor_scale=3.0, mean=LITE_MEAN, std=LITE_STD, size_multiple=64,
        ),
        # Tiny rows for fast tests: real architecture, small widths.
        ModelConfig("test", "efficientnet-test", 128, 24, 2, 2, size_multiple=64),
        ModelConfig(
            "test-lite", "efficientnet-lite-test", 128, 16, 2, 1, activation="relu6", fusion="sum",
            anchor_scale=3.0, mean=LITE_MEAN, std=LITE_STD, size_multiple=64,
        ),
    )
}

FUSIONS = ("fast", "softmax", "sum")
ACTIVATIONS = ("swish", "relu6")


def variant_names() -> list[str]:
    """All variant names, in table order."""
    return list(VARIANTS)


def get_config(name: str, num_classes: int | None = None, image_size: int | None = None) -> ModelConfig:
    """Look up a variant and apply user overrides.

    Args:
        name: variant name (case-insensitive; ``efficientdet-d0`` is accepted too).
        num_classes: override the number of classes (>= 1).
        image_size: override the square input size; must be a multiple of 128 (D-series)
            or 64 (Lite and test rows) so every pyramid level P3-P7 is well defined.

    Raises:
        ConfigError: unknown name or impossible override (one line, lists valid choices).
    """
    key = str(name).strip().lower()
    if key.startswith("efficientdet-"):
        key = key[len("efficientdet-"):]
    if key not in VARIANTS:
        raise ConfigError(
            f"unknown model variant {name!r}{did_you_mean(key, VARIANTS)}; valid: {', '.join(VARIANTS)}"
        )
    cfg = VARIANTS[key]
    changes: dict = {}
    if num_classes is not None:
        if int(num_classes) != num_classes or int(num_classes) < 1:
            raise ConfigError(f"--num-classes must be a positive integer, got {num_classes!r}")
        changes["num_classes"] = int(num_classes)
    if image_size is not None:
        m = cfg.size_multiple
        try:
            size = int(image_size)
        except (TypeError, ValueError):
            size = -1
        if size != image_size or size < m or size % m:
            raise ConfigError(
                f"--image-size {image_size!r} is impossible for {cfg.name}: use a multiple of {m} "
                f"(e.g. {', '.join(str(m * k) for k in range(2, 7))})"
            )
        changes["image_size"] = size
    return dataclasses.replace(cfg, **changes) if changes else cfg
