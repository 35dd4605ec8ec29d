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
        ann_path: the annotation file the boxes came from (VOC XML, YOLO txt, COCO JSON);
            the checker names it in its reports. Empty when unknown.
        unknown_labels: box index -> the label as written in the annotation, for boxes whose
            class is not in the class list (their ``classes`` entry is -1). The checker
            reports them; a clean dataset has none.
        size_filled: the annotation gave no size (or 0) and the reader took it from the image.
        relabelled: box index -> the label as written, for labels that differed from their
            class only in case or spacing and were mapped onto it. Both are repairs the
            checker lists file by file.
    """

    image_path: str
    width: int
    height: int
    boxes: np.ndarray
    classes: np.ndarray
    image_id: int = 0
    ann_path: str = ""
    unknown_labels: dict[int, str] = field(default_factory=dict)
    size_filled: bool = False
    relabelled: dict[int, str] = field(default_factory=dict)

    @property
    def num_boxes(self) -> int:
        return int(len(self.boxes))


@dataclass
class Dataset:
    """A dataset with named splits ("train", "val", "test") and class names."""

    root: str
    class_names: list[str]
    splits: dict[str, list[Sample]] = field(default_factory=dict)
    source_format: str = ""  # "coco" | "voc" | "yolo"
    layout: str = ""  # the layout found, in words, e.g. "VOC XML beside the images"
    notes: list[str] = field(default_factory=list)  # one-line remarks for the user (no class list found, ...)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def samples(self) -> list[Sample]:
        """All samples of all splits, in split order (train, val, test, others)."""
        order = sorted(self.splits, key=lambda k: ("train", "val", "test").index(k) if k in ("train", "val", "test") else 3)
        return [s for k in order for s in self.splits[k]]

    def split(self, name: str) -> list[Sample]:
        from edgedet.errors import DataError

        if name not in self.splits:
            raise DataError(f"{self.root}: no split {name!r} (have: {', '.join(self.splits) or 'none'})")
        return self.splits[name]
