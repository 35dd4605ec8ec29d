"""Training options and backbone freezing (TensorFlow loads lazily; strategies: :mod:`edgedet.train.distribute`)."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from edgedet.errors import ConfigError


@dataclass
class TrainOptions:
    """Everything ``edgedet train`` takes (stored in run.json so ``--resume`` needs nothing else)."""

    data: str
    out: str
    model: str = "lite0"
    image_size: int | None = None
    epochs: int = 50
    batch: int = 8
    lr: float | None = None  # default: automl's 0.08 per 64 images, scaled linearly
    warmup_epochs: float = 1.0
    freeze_backbone: str | None = None  # None, "all", or "N": stem + blocks 1..N
    backbone_weights: str | None = "auto"  # imagenet where available offline, else random init
    init: str | None = None  # "automl:PATH" or "automl:efficientdet-NAME": start from a COCO checkpoint
    strategy: str = "default"  # default | mirrored | multiworker (see edgedet.train.distribute)
    mixed_precision: bool = False  # mixed_float16 where a GPU is visible
    connect_timeout: float = 30.0  # multiworker: seconds the cluster gets to form
    seed: int = 0
    ema_decay: float = 0.9998
    jitter: tuple = (0.1, 2.0)
    flip: bool = True
    label_smoothing: float = 0.0
    clip_norm: float = 10.0
    weight_decay: float = 4e-5
    momentum: float = 0.9
    eval_every: int = 1
    time_limit: float | None = None  # minutes; shortens the schedule so the run ends in time
    check_policy: str = "skip"
    classes: str | None = None
    progress: bool = True

    @property
    def base_lr(self) -> float:
        return self.lr if self.lr else 0.08 * self.batch / 64.0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["jitter"] = list(self.jitter)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainOptions":
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d["jitter"] = tuple(d.get("jitter", (0.1, 2.0)))
        return cls(**d)


def freeze_layers(model, spec: str | None) -> int:
    """Freeze backbone layers: "all" (stem + every block) or "N" (stem + blocks 1..N). Returns count."""
    if not spec:
        return 0
    if spec == "all":
        prefixes = ("stem_", "block", "top_")
    else:
        try:
            n = int(spec)
        except ValueError:
            raise ConfigError(f"--freeze-backbone {spec!r}: expected 'all' or a number of backbone stages") from None
        prefixes = ("stem_",)
    count = 0
    for layer in model.layers:
        m = re.match(r"block(\d+)[a-z]+_", layer.name)
        if layer.name.startswith(prefixes) or (spec != "all" and m and int(m.group(1)) <= n):
            layer.trainable = False  # BN layers then also run in inference mode (tf_keras)
            count += 1
    return count
