"""Parameter and MAC counts computed from a ModelConfig alone (no TensorFlow).

Mirrors the Keras builders layer by layer; a test checks that these numbers equal
``model.count_params()`` and :func:`edgedet.model.efficientdet.count_macs` of the built graph,
so ``edgedet info`` can answer instantly for every variant and the published-figure checks
do not need to build D7.

Conventions: 1 MAC = one multiply-add of a Conv2D / DepthwiseConv2D / Dense; BN, activations,
pooling and adds are not counted. BatchNorm has 2 trainable (gamma, beta) and 2 non-trainable
(moving mean/var) parameters per channel. The published EfficientDet figures (3.9M for D0)
are the *trainable* counts.
"""
from __future__ import annotations

from dataclasses import dataclass

from edgedet.model.bifpn import NODES
from edgedet.model.config import ModelConfig
from edgedet.model.scaling import BACKBONES, stage_plan
from edgedet.runtime.anchors import LEVELS


@dataclass
class Count:
    trainable: int = 0
    non_trainable: int = 0
    macs: int = 0

    @property
    def params(self) -> int:
        return self.trainable + self.non_trainable

    def conv(self, hw: int, k: int, cin: int, cout: int, bias: bool) -> None:
        self.trainable += k * k * cin * cout + (cout if bias else 0)
        self.macs += hw * k * k * cin * cout

    def dw(self, hw: int, k: int, c: int) -> None:
        self.trainable += k * k * c
        self.macs += hw * k * k * c

    def bn(self, c: int) -> None:
        self.trainable += 2 * c
        self.non_trainable += 2 * c


def _half(n: int) -> int:
    return (n + 1) // 2


def backbone_count(name: str, image_size: int, c: Count | None = None) -> tuple[Count, list[tuple[int, int]]]:
    """Count the backbone (no classifier head). Returns ``(count, [(size, channels) for P3, P4, P5])``."""
    c = c or Count()
    plan = stage_plan(BACKBONES[name])
    h = _half(image_size)
    stem = plan[0][0].filters_in
    c.conv(h * h, 3, 3, stem, bias=False)
    c.bn(stem)
    ends = []
    for stage, (args, repeats) in enumerate(plan):
        for j in range(repeats):
            fin = args.filters_in if j == 0 else args.filters_out
            stride = args.stride if j == 0 else 1
            filters = fin * args.expand
            if args.expand != 1:
                c.conv(h * h, 1, fin, filters, bias=False)
                c.bn(filters)
            if stride == 2:
                h = _half(h)
            c.dw(h * h, args.kernel, filters)
            c.bn(filters)
            if args.se_ratio:
                se = max(1, int(fin * args.se_ratio))
                c.conv(1, 1, filters, se, bias=True)
                c.conv(1, 1, se, filters, bias=True)
            c.conv(h * h, 1, filters, args.filters_out, bias=False)
            c.bn(args.filters_out)
        if stage in (2, 4, 6):
            ends.append((h, args.filters_out))
    return c, ends


def count(cfg: ModelConfig) -> Count:
    """Trainable/non-trainable parameters and MACs of ``build_model(cfg)`` at batch 1."""
    c, ends = backbone_count(cfg.backbone, cfg.image_size)
    w = cfg.fpn_width

    def resample(size_in: int, ch: int) -> None:
        if ch != w:  # 1x1 conv + BN, applied at the input resolution (before pool/upsample)
            c.conv(size_in * size_in, 1, ch, w, bias=True)
            c.bn(w)

    h5, c5 = ends[-1]
    resample(h5, c5)
    feats = ends + [(_half(h5), w), (_half(_half(h5)), w)]  # (size, channels) for P3..P7
    for _ in range(cfg.fpn_layers):
        levels = list(LEVELS)
        cur = list(feats)
        for level, offsets in NODES:
            size = cur[levels.index(level)][0]
            for o in offsets:
                resample(cur[o][0], cur[o][1])
            if cfg.fusion != "sum":
                c.trainable += len(offsets)
            c.dw(size * size, 3, w)
            c.conv(size * size, 1, w, w, bias=True)
            c.bn(w)
            cur.append((size, w))
            levels.append(level)
        feats = [cur[max(i for i, lv in enumerate(levels) if lv == level)] for level in LEVELS]

    for out in (cfg.num_anchors * cfg.num_classes, cfg.num_anchors * 4):
        # Shared separable convs: weights counted once, MACs once per level; BN per level.
        c.trainable += cfg.head_layers * (9 * w + w * w + w) + 9 * w + w * out + out
        for size, _ in feats:
            hw = size * size
            c.macs += cfg.head_layers * hw * (9 * w + w * w) + hw * (9 * w + w * out)
            for _ in range(cfg.head_layers):
                c.bn(w)
    return c
