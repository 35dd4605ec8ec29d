"""Load a detection dataset (COCO JSON, Pascal VOC XML or YOLO txt) into one internal form.

The folder layout (VOC folders under any common name, XML beside the images, YOLO with or
without a data YAML, Roboflow/CVAT/Label Studio COCO exports, split folders) is found by
:mod:`edgedet.train.layouts`. Every reader returns a :class:`edgedet.train.types.Dataset` whose
samples carry xyxy pixel boxes and 0-based class ids into ``Dataset.class_names``. Splits come
from the dataset's own folders or files (split folders, COCO per-split JSONs, VOC
``ImageSets/Main/*.txt``, the YOLO data YAML); a dataset without them is split by a seeded ratio. Readers only parse: they never decode images (YOLO
reads image headers, because its boxes are normalised). Box-level problems are left for
:mod:`edgedet.train.check`, which reports them file by file; what makes the whole dataset
unusable (no annotations, a missing image folder, a class list that contradicts itself)
raises a one-line :class:`~edgedet.errors.DataError` here.

Only numpy, Pillow and (for YOLO) PyYAML are used; nothing here imports TensorFlow.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from edgedet.errors import DataError
from edgedet.train.types import Dataset, Sample

FORMATS = ("coco", "voc", "yolo")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
DEFAULT_RATIOS = (0.8, 0.1, 0.1)

# Spellings of split names found in the wild (Roboflow exports use "valid").
_SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "minival": "val",
    "test": "test", "testing": "test", "testdev": "test", "test-dev": "test",
}


def split_name(text: str) -> str | None:
    """Canonical split ("train"/"val"/"test") named by a file or folder name, else None.

    ``instances_train2017`` -> "train", ``valid`` -> "val", ``test.json`` -> "test".
    """
    stem = Path(text).name.lower()
    for suffix in (".json", ".txt", ".coco"):
        stem = stem.removesuffix(suffix)
    tokens = [t.rstrip("0123456789") for t in stem.replace("-", "_").replace(".", "_").split("_")]
    for tok in reversed(tokens):  # "instances_val2017": the split is the last word
        if tok in _SPLIT_ALIASES:
            return _SPLIT_ALIASES[tok]
    return None


def image_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(width, height)`` as displayed (EXIF rotation applied), from the header only, or None."""
    from PIL import Image

    from edgedet.runtime.preprocess import displayed_size

    try:
        with Image.open(path) as im:
            return displayed_size(im)
    except (OSError, ValueError, SyntaxError):
        return None


def label_key(label: str) -> str:
    """What two labels share when they differ only in case or spacing: ``" Red  Cell"`` -> ``"redcell"``."""
    return "".join(str(label).split()).casefold()


def map_labels(labels: Sequence[str], classes: Sequence[str] | None) -> tuple[list[str], dict[str, str]]:
    """The class list, and the labels to map onto a class because they differ from it only in case/spacing.

    Args:
        labels: every label as written in the annotations (repeats count).
        classes: a given class list, or None to build it from the labels: one class per
            case/spacing-insensitive group, spelled as most boxes spell it (ties: sorted first),
            the classes sorted.

    Returns:
        ``(class_names, {label as written: class name})``; labels that match no class are not
        in the map (the caller marks them unknown).
    """
    from collections import Counter

    counts = Counter(labels)
    if classes is None:
        groups: dict[str, list[str]] = {}
        for lab in sorted(counts):
            groups.setdefault(label_key(lab), []).append(lab)
        classes = sorted(max(g, key=lambda x: (counts[x], x.strip() == x, -g.index(x))) for g in groups.values())
    by_key: dict[str, list[str]] = {}
    for c in classes:
        by_key.setdefault(label_key(c), []).append(c)
    known = set(classes)
    mapping = {}
    for lab in counts:
        if lab not in known and len(by_key.get(label_key(lab), [])) == 1:
            mapping[lab] = by_key[label_key(lab)][0]
    return list(classes), mapping


def read_class_file(path: str | os.PathLike) -> list[str]:
    """Class names, one per line (``labels.txt``/``classes.txt``), blank lines ignored."""
    names = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n]
    if not names:
        raise DataError(f"{path}: class list file is empty")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DataError(f"{path}: class {dup!r} listed twice")
    return names


def resolve_classes(classes: Sequence[str] | str | os.PathLike | None) -> list[str] | None:
    """A class list given as a sequence, a comma-separated string or a file path."""
    if classes is None:
        return None
    if isinstance(classes, (str, os.PathLike)):
        if os.path.isfile(classes):
            return read_class_file(classes)
        given, classes = str(classes), [c.strip() for c in str(classes).split(",")]
        if not all(classes):
            raise DataError(f"class list {given!r}: an empty name (give names separated by single commas)")
    names = list(classes)
    if len(set(names)) != len(names):
        raise DataError(f"class list {names}: a class is listed twice")
    return names


def make_sample(image_path, width, height, boxes, classes, image_id, ann_path="", unknown=None) -> Sample:
    """Build a Sample with the dtypes and shapes the rest of the package relies on."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    c = np.asarray(classes, dtype=np.int32).reshape(-1)
    return Sample(str(image_path), int(width), int(height), b, c, int(image_id), str(ann_path), dict(unknown or {}))


def ratio_split(samples: list[Sample], ratios: Sequence[float] = DEFAULT_RATIOS, seed: int = 0,
                names: Sequence[str] = ("train", "val", "test")) -> dict[str, list[Sample]]:
    """Split samples by ratio, reproducibly: sort by image path, then a seeded permutation.

    Sorting first makes the split independent of file-system listing order. Every split with a
    non-zero ratio gets at least one sample when there are enough samples.
    """
    if len(ratios) != len(names):
        raise DataError(f"split ratios {tuple(ratios)} must have {len(names)} values ({', '.join(names)})")
    r = np.asarray(ratios, dtype=np.float64)
    if (r < 0).any() or r.sum() <= 0:
        raise DataError(f"split ratios {tuple(ratios)} must be non-negative and sum to > 0")
    r = r / r.sum()
    ordered = sorted(samples, key=lambda s: s.image_path)
    perm = np.random.default_rng(seed).permutation(len(ordered))
    n = len(ordered)
    counts = np.floor(r * n).astype(int)
    for i in np.argsort(-(r * n - counts)):  # hand out the remainder by largest fraction
        if counts.sum() >= n:
            break
        counts[i] += 1
    for i in range(len(counts)):  # a requested split should not come out empty
        if r[i] > 0 and counts[i] == 0 and counts.max() > 1:
            counts[int(np.argmax(counts))] -= 1
            counts[i] += 1
    out, start = {}, 0
    for name, c in zip(names, counts):
        out[name] = [ordered[j] for j in sorted(perm[start:start + c])]
        start += c
    return {k: v for k, v in out.items() if v or k == "train"}


def complete_splits(own: dict[str, list[Sample]], all_samples: list[Sample],
                    ratios: Sequence[float] = DEFAULT_RATIOS, seed: int = 0) -> dict[str, list[Sample]]:
    """Fill in splits the dataset does not define.

    No split files at all: ratio split of everything. A train split without val: carve val out
    of train with the ratio val/(train+val). A missing test split stays missing (``Dataset.split``
    then names the problem) rather than silently eating training data.
    """
    own = {k: v for k, v in own.items() if v}
    if not own:
        return ratio_split(all_samples, ratios, seed)
    if "train" in own and "val" not in own:
        tr, va = float(ratios[0]), float(ratios[1])
        parts = ratio_split(own["train"], (tr, va), seed, names=("train", "val"))
        own = {**own, **parts}
    order = {"train": 0, "val": 1, "test": 2}
    return dict(sorted(own.items(), key=lambda kv: order.get(kv[0], 3)))


def detect_format(path: str | os.PathLike) -> str:
    """Name the annotation format at ``path`` ("coco", "voc" or "yolo"); see :mod:`edgedet.train.layouts`."""
    from edgedet.train.layouts import detect_layout

    return detect_layout(path).kind


def load_dataset(path: str | os.PathLike, format: str | None = None, *,
                 classes: Sequence[str] | str | None = None,
                 ratios: Sequence[float] = DEFAULT_RATIOS, seed: int = 0) -> Dataset:
    """Read a dataset in any supported format and layout.

    Args:
        path: a dataset folder (its layout is found by :func:`edgedet.train.layouts.detect_layout`),
            a COCO ``.json`` or a YOLO data ``.yaml``; ``voc:PATH`` (``coco:``, ``yolo:``) names the
            format where the folder holds two.
        format: "coco", "voc" or "yolo" to consider only that format's layouts.
        classes: the class list (names, a comma-separated string or a file with one name per
            line). COCO and YOLO with a YAML carry their own list; VOC defaults to ``labels.txt``
            / ``classes.txt`` in the dataset folder, else the label names found; YOLO without a
            YAML to ``classes.txt``/``obj.names``/``names.txt``, else ``class0..classN``. Labels
            not in the list are kept with class -1 for the checker to report.
        ratios: (train, val, test) fractions for datasets without their own splits.
        seed: seed of that split.

    Returns:
        A :class:`Dataset` with absolute image paths, xyxy float32 pixel boxes and int32
        0-based classes.

    Raises:
        DataError: path missing, unknown format, an ambiguous or unrecognised folder, missing
            image folder, no images or no boxes at all, or a class list that contradicts itself.
    """
    from edgedet.train.layouts import detect_layout, split_format

    if not format:
        format, path = split_format(path)
    fmt = format.lower() if format else None
    if fmt is not None and fmt not in FORMATS:
        from edgedet.errors import did_you_mean

        raise DataError(f"unknown dataset format {format!r}{did_you_mean(fmt, FORMATS)} (choose from {', '.join(FORMATS)})")
    lay = detect_layout(path, fmt)
    names = resolve_classes(classes)
    kw = {"classes": names, "ratios": ratios, "seed": seed, "layout": lay.name}
    if lay.kind == "voc":
        from edgedet.train.readers_voc import read_voc

        ds = read_voc(lay.root, parts=lay.parts, **kw)
    elif lay.kind == "coco":
        from edgedet.train.readers_coco import read_coco

        ds = read_coco(lay.path.resolve(), **kw)
    elif lay.path is not None:
        from edgedet.train.readers_yolo import read_yolo

        ds = read_yolo(lay.path.resolve(), **kw)
    else:
        from edgedet.train.readers_yolo import read_yolo_dirs

        ds = read_yolo_dirs(lay.root, lay.parts, **kw)
    _check_not_empty(ds, path)
    return ds


def _check_not_empty(ds: Dataset, path) -> None:
    samples = ds.samples()
    if not samples:
        raise DataError(f"{path}: empty dataset (no annotated images found)")
    if not any(s.num_boxes for s in samples):
        raise DataError(f"{path}: empty dataset ({len(samples)} images but not a single box)")
    if not ds.class_names:
        raise DataError(f"{path}: no class names")
