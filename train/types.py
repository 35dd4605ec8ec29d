"""The one internal dataset form every reader (COCO, VOC, YOLO, synth) produces."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Sample:
    """One annotated image.

    Attributes:
        image_path: absolute path to the image file.
        width, height: image size in pixels, as annotated (the checker compares them with
            the real image).
        boxes: ``(N, 4)`` float32 xyxy in pixels.
        classes: ``(N,)`` int32 0-based class ids into ``Dataset.class_names``.
        image_id: stable integer id (COCO image id when read from COCO).
    """

    image_path: str
    width: int
    height: int
    boxes: np.ndarray
    classes: np.ndarray
    image_id: int = 0


@dataclass
class Dataset:
    """A dataset with named splits ("train", "val", "test") and class names."""

    root: str
    class_names: list[str]
    splits: dict[str, list[Sample]] = field(default_factory=dict)
    source_format: str = ""  # "coco" | "voc" | "yolo"

    def split(self, name: str) -> list[Sample]:
        from edgedet.errors import DataError

        if name not in self.splits:
            raise DataError(f"{self.root}: no split {name!r} (have: {', '.join(self.splits) or 'none'})")
        return self.splits[name]
