"""EfficientDet anchors, shared by training targets, evaluation and on-device decoding.

Order (must match the network's flattened outputs): level P3..P7, then row-major spatial
position (y, x), then anchor index ``scale * len(aspect_ratios) + ratio`` — the order
google/automl uses, so per-level head outputs reshaped to ``(H*W*A, C)`` line up.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np

MIN_LEVEL, MAX_LEVEL = 3, 7  # P3 (stride 8) .. P7 (stride 128)
LEVELS = tuple(range(MIN_LEVEL, MAX_LEVEL + 1))


@dataclass(frozen=True)
class AnchorConfig:
    """Anchor settings. Stored in every exported model's metadata.

    Attributes:
        min_level: first pyramid level (P3 = stride 8).
        max_level: last pyramid level (P7 = stride 128).
        num_scales: octave scales per level, ``2**(i / num_scales)``.
        aspect_ratios: width/height ratios; 0.5 is tall, 2.0 is wide.
        anchor_scale: base anchor size in units of the level stride.
    """

    min_level: int = MIN_LEVEL
    max_level: int = MAX_LEVEL
    num_scales: int = 3
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5)
    anchor_scale: float = 4.0

    @property
    def num_anchors(self) -> int:
        """Anchors per spatial position."""
        return self.num_scales * len(self.aspect_ratios)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["aspect_ratios"] = list(self.aspect_ratios)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "AnchorConfig":
        d = dict(d)
        d["aspect_ratios"] = tuple(float(a) for a in d.get("aspect_ratios", (1.0, 2.0, 0.5)))
        return cls(**d)


def feature_sizes(image_size: tuple[int, int], min_level: int = MIN_LEVEL, max_level: int = MAX_LEVEL) -> list[tuple[int, int]]:
    """Spatial size of each level P_min..P_max for an input of ``(height, width)``.

    Each stride-2 step uses SAME padding, i.e. ``ceil(n / 2)``, exactly as the network's
    convolutions and max-pools do (320 px -> 40, 20, 10, 5, 3).
    """
    h, w = int(image_size[0]), int(image_size[1])
    sizes = []
    for level in range(1, max_level + 1):
        h, w = (h + 1) // 2, (w + 1) // 2
        if level >= min_level:
            sizes.append((h, w))
    return sizes


@dataclass(frozen=True)
class Anchors:
    """Anchor boxes for one input size.

    Attributes:
        center: ``(N, 4)`` float32 ``(cy, cx, h, w)`` in input pixels.
        level_counts: anchors per level, P_min..P_max (sums to N).
    """

    center: np.ndarray
    level_counts: tuple[int, ...] = field(default=())

    @property
    def xyxy(self) -> np.ndarray:
        """``(N, 4)`` float32 ``(x1, y1, x2, y2)``."""
        cy, cx, h, w = self.center.T
        return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)

    def __len__(self) -> int:
        return int(self.center.shape[0])


@lru_cache(maxsize=16)
def _cached(image_size: tuple[int, int], config: AnchorConfig) -> Anchors:
    h_img, w_img = image_size
    per_level, counts = [], []
    for (fh, fw) in feature_sizes(image_size, config.min_level, config.max_level):
        # automl derives the stride from the actual feature size (320/3 for P7 at 320 px),
        # so anchor centres cover the image evenly even when sizes are not powers of two.
        sy, sx = h_img / fh, w_img / fw
        shapes = []
        for octave in range(config.num_scales):
            for ratio in config.aspect_ratios:
                base = config.anchor_scale * 2.0 ** (octave / config.num_scales)
                rx = np.sqrt(ratio)
                shapes.append((base * sy / rx, base * sx * rx))  # (h, w)
        shapes = np.asarray(shapes, dtype=np.float64)  # (A, 2)
        cy = (np.arange(fh) + 0.5) * sy
        cx = (np.arange(fw) + 0.5) * sx
        cyy, cxx = np.meshgrid(cy, cx, indexing="ij")  # (fh, fw)
        a = shapes.shape[0]
        centers = np.empty((fh, fw, a, 4), dtype=np.float64)
        centers[..., 0] = cyy[..., None]
        centers[..., 1] = cxx[..., None]
        centers[..., 2] = shapes[:, 0]
        centers[..., 3] = shapes[:, 1]
        per_level.append(centers.reshape(-1, 4))
        counts.append(fh * fw * a)
    center = np.concatenate(per_level).astype(np.float32)
    center.setflags(write=False)
    return Anchors(center=center, level_counts=tuple(counts))


def generate_anchors(image_size, config: AnchorConfig | None = None) -> Anchors:
    """Anchors for an input of ``image_size`` (int or ``(height, width)``).

    Returns:
        Anchors with ``center`` of shape ``(N, 4)``; N = sum_l H_l * W_l * A.
        Cached: the array is read-only and shared.
    """
    if isinstance(image_size, (int, np.integer)):
        image_size = (int(image_size), int(image_size))
    return _cached((int(image_size[0]), int(image_size[1])), config or AnchorConfig())
