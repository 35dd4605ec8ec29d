"""EfficientNet scaling rules (TensorFlow-free, shared by the Keras builder and the analytic counter).

Stage table and compound scaling as in the TF reference (tensorflow/tpu
``efficientnet_builder.py`` / ``lite/efficientnet_lite_builder.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class BlockArgs:
    kernel: int
    repeats: int
    filters_in: int
    filters_out: int
    expand: int
    stride: int
    se_ratio: float = 0.25


# r1_k3_s11_e1_i32_o16_se0.25 ... r1_k3_s11_e6_i192_o320_se0.25 (the B0 stages).
BASE_BLOCKS = (
    BlockArgs(3, 1, 32, 16, 1, 1),
    BlockArgs(3, 2, 16, 24, 6, 2),
    BlockArgs(5, 2, 24, 40, 6, 2),
    BlockArgs(3, 3, 40, 80, 6, 2),
    BlockArgs(5, 3, 80, 112, 6, 1),
    BlockArgs(5, 4, 112, 192, 6, 2),
    BlockArgs(3, 1, 192, 320, 6, 1),
)


@dataclass(frozen=True)
class BackboneSpec:
    """Scaling of one backbone: ``width``/``depth`` coefficients, classifier input size."""

    width: float
    depth: float
    resolution: int
    dropout: float
    lite: bool = False


BACKBONES: dict[str, BackboneSpec] = {
    "efficientnet-b0": BackboneSpec(1.0, 1.0, 224, 0.2),
    "efficientnet-b1": BackboneSpec(1.0, 1.1, 240, 0.2),
    "efficientnet-b2": BackboneSpec(1.1, 1.2, 260, 0.3),
    "efficientnet-b3": BackboneSpec(1.2, 1.4, 300, 0.3),
    "efficientnet-b4": BackboneSpec(1.4, 1.8, 380, 0.4),
    "efficientnet-b5": BackboneSpec(1.6, 2.2, 456, 0.4),
    "efficientnet-b6": BackboneSpec(1.8, 2.6, 528, 0.5),
    "efficientnet-lite0": BackboneSpec(1.0, 1.0, 224, 0.2, lite=True),
    "efficientnet-lite1": BackboneSpec(1.0, 1.1, 240, 0.2, lite=True),
    "efficientnet-lite2": BackboneSpec(1.1, 1.2, 260, 0.3, lite=True),
    "efficientnet-lite3": BackboneSpec(1.2, 1.4, 280, 0.3, lite=True),
    "efficientnet-lite4": BackboneSpec(1.4, 1.8, 300, 0.3, lite=True),
    # Tiny backbones for tests: every stage kept (same strides/endpoints), 1 block each.
    "efficientnet-test": BackboneSpec(0.25, 0.3, 128, 0.0),
    "efficientnet-lite-test": BackboneSpec(0.25, 0.3, 128, 0.0, lite=True),
}


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Channel count scaled by ``width`` and rounded to a multiple of ``divisor`` (TF reference)."""
    filters *= width
    new = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    if new < 0.9 * filters:  # never round down by more than 10 %
        new += divisor
    return int(new)


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


def stage_plan(spec: BackboneSpec) -> list[tuple[BlockArgs, int]]:
    """``[(scaled BlockArgs, repeats)]`` per stage, as the reference scales them."""
    plan = []
    last = len(BASE_BLOCKS) - 1
    for i, b in enumerate(BASE_BLOCKS):
        fixed = spec.lite and i in (0, last)  # Lite: first/last stage repeats not scaled
        fin = 32 if (spec.lite and i == 0) else round_filters(b.filters_in, spec.width)  # Lite stem fixed
        args = BlockArgs(
            b.kernel, b.repeats, fin, round_filters(b.filters_out, spec.width), b.expand, b.stride,
            0.0 if spec.lite else b.se_ratio,
        )
        plan.append((args, b.repeats if fixed else round_repeats(b.repeats, spec.depth)))
    return plan
