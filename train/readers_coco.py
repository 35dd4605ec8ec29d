"""COCO JSON reader (``instances_*.json``, Roboflow ``_annotations.coco.json``, ``{split}.json``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from edgedet.errors import DataError
from edgedet.train.datasets import complete_splits, image_size, make_sample, split_name
from edgedet.train.types import Dataset


def find_jsons(root: Path) -> list[Path]:
    """Candidate COCO annotation files in a dataset folder (by name, nothing is parsed).

    Looks at ``annotations/*.json`` (only ``instances_*`` when present, as in COCO itself),
    ``*/_annotations.coco.json`` (Roboflow) and ``*.json`` at the top level.
    """
    found = sorted((root / "annotations").glob("*.json")) if (root / "annotations").is_dir() else []
    inst = [p for p in found if p.name.startswith("instances")]
    found = inst or found
    if not found:
        found = sorted(root.glob("*/_annotations.coco.json"))
    if not found:
        found = [p for p in sorted(root.glob("*.json")) if not p.name.startswith(".")]
    return found


def read_coco(path: Path, classes: Sequence[str] | None = None, ratios=(0.8, 0.1, 0.1), seed: int = 0,
              layout: str = "COCO JSON") -> Dataset:
    """Read one COCO JSON file or a folder of per-split JSONs.

    Category ids are remapped, in id order, to contiguous 0-based classes with their names
    kept; ``image_id`` is kept. ``bbox`` ``[x, y, w, h]`` becomes xyxy (a polygon's bounds when
    an annotation has only ``segmentation``). ``iscrowd`` regions are dropped (they are not
    trainable boxes), and so is a Roboflow export's dataset-level category; notes say so. Annotations whose ``category_id`` is not among the
    categories keep class -1 for the checker to report.

    Args:
        path: a ``.json`` file or a folder (see :func:`find_jsons`). The split of each file is
            read from its name (``instances_val2017.json`` -> val, ``valid/`` -> val); a single
            file without a split name is split by ratio.
        classes: optional class list; must equal the categories' names.
        ratios, seed: ratio split for datasets without per-split files.

    Raises:
        DataError: no JSON, a JSON that is not COCO, files whose categories differ, an
            annotation naming a missing image, or an image folder that cannot be found.
    """
    path = path.resolve()
    root = path.parent if path.is_file() else path
    files = [path] if path.is_file() else find_jsons(path)
    if not files:
        raise DataError(f"{path}: no COCO .json annotation files")
    named = {}
    for f in files:
        s = split_name(f.name) or (split_name(f.parent.name) if f.name == "_annotations.coco.json" else None)
        if s is None and len(files) > 1:
            raise DataError(f"{f}: cannot tell which split (train/val/test) this file is; name it e.g. instances_train.json")
        if s in named:
            raise DataError(f"{f}: second annotation file for split {s!r} (first: {named[s].name})")
        named[s] = f

    class_names, cat_ids, splits, notes = None, None, {}, []
    for s, f in named.items():
        data = _load_json(f)
        names, ids = _categories(data, f, notes)
        if class_names is None:
            class_names, cat_ids = names, ids
        elif (names, ids) != (class_names, cat_ids):
            raise DataError(f"{f}: categories differ from those in {named[next(iter(named))].name}")
        splits[s] = _samples(data, f, root, s, {cid: i for i, cid in enumerate(ids)}, notes)

    if classes is not None and list(classes) != class_names:
        raise DataError(f"{path}: class list {list(classes)} disagrees with the COCO categories {class_names}")
    all_samples = [x for v in splits.values() for x in v]
    own = {k: v for k, v in splits.items() if k is not None}
    return Dataset(str(root), class_names, complete_splits(own, all_samples, ratios, seed), "coco", layout,
                   list(dict.fromkeys(notes)))


def _load_json(f: Path) -> dict:
    try:
        with open(f, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise DataError(f"{f}: cannot read COCO JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{f}: not a COCO detection file (no 'images' list)")
    return data


def _categories(data: dict, f: Path, notes: list[str]) -> tuple[list[str], list[int]]:
    cats = data.get("categories") or []
    if not cats:
        if data.get("annotations"):
            raise DataError(f"{f}: class list disagrees with the labels: annotations but no 'categories'")
        raise DataError(f"{f}: no 'categories'")
    cats = sorted(cats, key=lambda c: int(c["id"]))
    umbrella = _umbrella(cats, data.get("annotations") or [])
    if umbrella is not None:
        cats = [c for c in cats if c is not umbrella]
        notes.append(f"{f.name}: category {umbrella['id']} {umbrella.get('name')!r} has no boxes and is the supercategory "
                     "of all the others (a Roboflow export's dataset-level entry): not a class")
    ids = [int(c["id"]) for c in cats]
    names = [str(c.get("name", c["id"])) for c in cats]
    if len(set(ids)) != len(ids):
        raise DataError(f"{f}: category id listed twice")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DataError(f"{f}: category name {dup!r} used by two category ids")
    return names, ids


def _umbrella(cats: list, annotations: list) -> dict | None:
    """The category that names the dataset rather than a class: it has no supercategory of its
    own, no annotation uses it, and every other category has it as ``supercategory`` (Roboflow
    writes ``{"id": 0, "name": "cells", "supercategory": "none"}`` into every split's file)."""
    if len(cats) < 2:
        return None
    used = {a.get("category_id") for a in annotations}
    for c in cats:
        others = [o for o in cats if o is not c]
        if (c["id"] not in used and str(c.get("supercategory") or "none").lower() == "none"
                and all(o.get("supercategory") == c.get("name") for o in others)):
            return c
    return None


def _samples(data: dict, f: Path, root: Path, split: str | None, cat_index: dict[int, int], notes: list[str]) -> list:
    images = data["images"]
    try:
        by_image: dict[int, list] = {int(im["id"]): [] for im in images}
        iids = [int(a["image_id"]) for a in data.get("annotations") or []]
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{f}: malformed image or annotation entry ({type(exc).__name__}: {exc})") from None
    crowd = 0
    for iid, a in zip(iids, data.get("annotations") or []):
        if iid not in by_image:
            raise DataError(f"{f}: annotation {a.get('id')} refers to image_id {iid}, which is not in 'images'")
        if a.get("iscrowd", 0):
            crowd += 1
            continue
        by_image[iid].append(a)
    if crowd:
        notes.append(f"{f.name}: {crowd} iscrowd region(s) left out (a crowd of objects is no box to learn)")
    try:
        img_dir, flat = _image_dir(images, f, root, split)
        return _build(images, by_image, img_dir, flat, f, cat_index, notes)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{f}: malformed image or annotation entry ({type(exc).__name__}: {exc})") from None


def _build(images, by_image, img_dir: Path, flat: bool, f: Path, cat_index: dict[int, int], notes: list[str]) -> list:
    out, from_polygon, no_box = [], 0, []
    for im in images:
        iid = int(im["id"])
        boxes, cls, unknown = [], [], {}
        for a in by_image[iid]:
            bbox = a.get("bbox") or _polygon_bounds(a.get("segmentation"))
            if not bbox:
                no_box.append(a.get("id"))
                continue
            from_polygon += not a.get("bbox")
            x, y, w, h = (float(v) for v in bbox)
            j = len(boxes)
            boxes.append([x, y, x + w, y + h])
            cid = int(a["category_id"])
            cls.append(cat_index.get(cid, -1))
            if cid not in cat_index:
                unknown[j] = f"category_id {cid}"
        name = _file_name(im)
        path = img_dir / (Path(name).name if flat else name)
        w, h = int(im.get("width") or 0), int(im.get("height") or 0)
        filled = not w or not h
        if filled:  # optional in some exporters: the header is the only truth we have
            w, h = image_size(path) or (0, 0)
        s = make_sample(path, w, h, boxes, cls, iid, str(f), unknown)
        s.size_filled = filled
        out.append(s)
    if from_polygon:
        notes.append(f"{f.name}: {from_polygon} annotation(s) without 'bbox' boxed by their polygon's bounds")
    if no_box:
        notes.append(f"{f.name}: {len(no_box)} annotation(s) with neither 'bbox' nor a polygon left out "
                     f"(first: id {no_box[0]})")
    return out


def _polygon_bounds(seg) -> list[float] | None:
    """``[x, y, w, h]`` around a COCO polygon segmentation ``[[x1, y1, x2, y2, ...], ...]``, or
    None (no polygon, or run-length encoded)."""
    if not isinstance(seg, list) or not seg:
        return None
    pts = [float(v) for poly in seg if isinstance(poly, list) for v in poly]
    xs, ys = pts[0::2], pts[1::2]
    if not xs or len(xs) != len(ys):
        return None
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def _file_name(im: dict) -> str:
    # Windows exporters write back-slashes; CVAT and Label Studio keep sub-folders in file_name.
    return str(im["file_name"]).replace("\\", "/")


def _image_dir(images: list, f: Path, root: Path, split: str | None) -> tuple[Path, bool]:
    """The folder that ``file_name`` is relative to, found by probing a few images.

    Returns ``(folder, flat)``; ``flat`` means only the base name of ``file_name`` is found there
    (an export whose sub-folders were flattened when the images were copied out).
    """
    if not images:
        return f.parent, False
    cands = [f.parent, root, root / "images", f.parent.parent / "images"]
    for d in (split, f.stem.removeprefix("instances_")) if split else (f.stem.removeprefix("instances_"),):
        if d:
            cands += [root / d, root / "images" / d]
    if split == "val":
        cands += [root / "valid", root / "images" / "valid"]
    probe = [_file_name(im) for im in images[:5]]
    cands = list(dict.fromkeys(cands))
    for flat in (False, True):
        for d in cands:
            if any((d / (Path(p).name if flat else p)).is_file() for p in probe):
                return d, flat
    raise DataError(
        f"{f}: missing image directory ({probe[0]!r} not found under any of "
        f"{', '.join(str(c.relative_to(root)) if c.is_relative_to(root) else str(c) for c in cands)})"
    )
