"""YOLO reader: one ``.txt`` per image, found through a data YAML or from the folder layout.

With a data YAML (``path``, ``train``/``val``/``test``, ``names``) the YAML says where the
images are. Without one (:func:`read_yolo_dirs`), :mod:`edgedet.train.layouts` hands over the
image and label folders it found (Ultralytics ``images/<split>/`` + ``labels/<split>/``, or
image + ``.txt`` pairs) and class names come from ``classes.txt``, ``obj.names``,
``names.txt`` or ``_darknet.labels``, else ``class0..classN`` with a note saying so.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from edgedet.errors import DataError
from edgedet.train.datasets import IMAGE_EXTS, complete_splits, image_size, make_sample, read_class_file
from edgedet.train.types import Dataset

_SPLIT_KEYS = {"train": "train", "val": "val", "valid": "val", "test": "test"}
CLASS_FILES = ("classes.txt", "obj.names", "names.txt", "_darknet.labels")  # the last: Roboflow Darknet export


def find_yaml(root: Path) -> Path | None:
    """The data YAML of a YOLO dataset folder (``data.yaml`` first), or None.

    Only YAMLs with a ``names`` key count, so unrelated config files are not mistaken for one.
    """
    cands = sorted(root.glob("*.yaml")) + sorted(root.glob("*.yml"))
    cands.sort(key=lambda p: p.stem != "data")
    for p in cands:
        try:
            d = _load_yaml(p)
        except DataError:
            continue
        if isinstance(d, dict) and "names" in d:
            return p
    return None


def read_yolo(path: Path, classes: Sequence[str] | None = None, ratios=(0.8, 0.1, 0.1), seed: int = 0,
              layout: str = "YOLO data YAML") -> Dataset:
    """Read a YOLO dataset from its data YAML (or a folder holding one).

    Labels are ``class cx cy w h`` normalised to [0, 1]; they become xyxy pixels using the real
    image size from the image header. Segment lines (``class x1 y1 x2 y2 ...``) become their
    bounding box. The label of ``.../images/x.jpg`` is ``.../labels/x.txt``; an image without a
    label file is a background image. A split entry can be a folder of images, a ``.txt`` list of
    image paths, or a list of those.

    Raises:
        DataError: no YAML, ``nc`` disagreeing with ``names``, a split path that does not exist,
            or a label line that is not numbers.
    """
    path = path.resolve()
    yaml_path = path if path.is_file() else find_yaml(path)
    if yaml_path is None:
        raise DataError(f"{path}: no YOLO data .yaml with 'names'")
    d = _load_yaml(yaml_path)
    if not isinstance(d, dict) or "names" not in d:
        raise DataError(f"{yaml_path}: not a YOLO data YAML (no 'names')")
    names = _names(d, yaml_path)
    if classes is not None and list(classes) != names:
        raise DataError(f"{yaml_path}: class list {list(classes)} disagrees with 'names' {names}")
    given = Path(str(d.get("path") or "."))
    base = given if given.is_absolute() else yaml_path.parent / given
    notes = []
    if not base.is_dir():
        # Ultralytics resolves a relative `path` against its own datasets folder, and a YAML
        # written on another machine (Colab's /content/...) names a folder that is not here:
        # the YAML's own folder is where the split folders are.
        base = yaml_path.parent
        notes.append(f"{yaml_path.name}: 'path: {given}' is not a folder here; split paths are read from {base.resolve()}")
    base = base.resolve()

    split_images: dict[str | None, list[Path]] = {}
    for key, split in _SPLIT_KEYS.items():
        if d.get(key):
            split_images.setdefault(split, []).extend(_list_images(d[key], base, yaml_path, key))
    if not split_images:
        if not (base / "images").is_dir():
            raise DataError(f"{yaml_path}: no train/val/test entries and no images/ folder under {base}")
        split_images[None] = _list_images("images", base, yaml_path, "images")

    all_paths = sorted({p for v in split_images.values() for p in v})
    ids = {p: i + 1 for i, p in enumerate(all_paths)}
    samples = {p: _sample(p, ids[p], len(names), label_path(p)) for p in all_paths}
    splits = {k: [samples[p] for p in v] for k, v in split_images.items() if k is not None}
    ds_splits = complete_splits(splits, [samples[p] for p in all_paths], ratios, seed)
    return Dataset(str(base), names, ds_splits, "yolo", layout, notes)


def read_yolo_dirs(root: Path, parts: list[tuple[str | None, Path, Path]], classes: Sequence[str] | None = None,
                   ratios=(0.8, 0.1, 0.1), seed: int = 0, layout: str = "") -> Dataset:
    """Read YOLO labels without a data YAML.

    Args:
        root: the dataset folder (class files are looked for here, then in the label folders).
        parts: ``(split or None, image folder, label folder)``; the label of ``img/x.jpg`` is
            ``lbl/x.txt`` (the same folder for image + ``.txt`` pairs). An image without a label
            file is a background image.
        classes: class list; default from a class file, else ``class0..classN`` (N = the largest id).

    Raises:
        DataError: a label line that is not numbers, or an empty class file.
    """
    root = root.resolve()
    notes = []
    if classes is None:
        dirs = list(dict.fromkeys([root] + [d for _, _, lbl in parts for d in (lbl, lbl.parent)]))
        found = next((d / f for d in dirs for f in CLASS_FILES if (d / f).is_file()), None)
        classes = read_class_file(found) if found else None
    images = {}
    for split, img_dir, lbl_dir in parts:
        for p in sorted(q for q in img_dir.iterdir() if q.suffix.lower() in IMAGE_EXTS):
            images[p.resolve()] = (split, (lbl_dir / p.name).with_suffix(".txt"))
    ids = {p: i + 1 for i, p in enumerate(sorted(images))}
    samples = {p: _sample(p, ids[p], len(classes) if classes else None, lbl) for p, (_, lbl) in images.items()}
    if classes is None:
        top = max((int(c) for s in samples.values() for c in s.classes), default=0)
        classes = [f"class{i}" for i in range(top + 1)]
        notes.append(f"{root}: no class names found (looked for {', '.join(CLASS_FILES)}); "
                     f"using class0..class{top}")
    splits: dict[str, list] = {}
    for p in sorted(images):
        if images[p][0] is not None:
            splits.setdefault(images[p][0], []).append(samples[p])
    ds_splits = complete_splits(splits, [samples[p] for p in sorted(images)], ratios, seed)
    return Dataset(str(root), list(classes), ds_splits, "yolo", layout, notes)


def _load_yaml(p: Path):
    import yaml

    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"{p}: cannot read YAML ({str(exc).splitlines()[0]})") from None


def _names(d: dict, yaml_path: Path) -> list[str]:
    raw = d["names"]
    if isinstance(raw, dict):
        try:
            keys = sorted(int(k) for k in raw)
        except (TypeError, ValueError):
            raise DataError(f"{yaml_path}: 'names' keys must be class ids 0..N-1") from None
        if keys != list(range(len(keys))):
            raise DataError(f"{yaml_path}: 'names' ids must be 0..{len(keys) - 1} without gaps, got {keys}")
        names = [str(raw[k] if k in raw else raw[str(k)]) for k in keys]
    elif isinstance(raw, (list, tuple)):
        names = [str(n) for n in raw]
    else:
        raise DataError(f"{yaml_path}: 'names' must be a list or a {{id: name}} mapping")
    if not names:
        raise DataError(f"{yaml_path}: 'names' is empty")
    if "nc" in d and int(d["nc"]) != len(names):
        raise DataError(f"{yaml_path}: class list disagrees with itself: nc is {d['nc']} but 'names' has {len(names)}")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DataError(f"{yaml_path}: class {dup!r} listed twice in 'names'")
    return names


def _list_images(entry, base: Path, yaml_path: Path, key: str) -> list[Path]:
    entries = entry if isinstance(entry, (list, tuple)) else [entry]
    out: list[Path] = []
    for e in entries:
        p = Path(str(e))
        if not p.is_absolute():
            q = (base / p).resolve()
            if not q.exists() and p.parts and p.parts[0] == "..":
                # Roboflow exports write "../train/images" for a train/ folder next to the YAML.
                alt = (yaml_path.parent / Path(*[x for x in p.parts if x != ".."])).resolve()
                q = alt if alt.exists() else q
            p = q
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_EXTS)
        elif p.is_file() and p.suffix.lower() == ".txt":
            for ln in p.read_text(encoding="utf-8").splitlines():
                if ln.strip():
                    q = Path(ln.strip())
                    # ultralytics: "./x.jpg" lines are relative to the list file's folder
                    out.append((q if q.is_absolute() else (p.parent if ln.strip().startswith(".") else base) / q).resolve())
        elif p.is_file() and p.suffix.lower() in IMAGE_EXTS:
            out.append(p)
        else:
            raise DataError(f"{yaml_path}: {key!r} path {p} does not exist (missing image directory)")
    return out


def label_path(image: Path) -> Path:
    """``.../images/a/x.jpg`` -> ``.../labels/a/x.txt`` (YOLO convention); else next to the image."""
    s = str(image)
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if sa in s:
        s = sb.join(s.rsplit(sa, 1))
    return Path(s).with_suffix(".txt")


def _sample(image: Path, image_id: int, nc: int | None, lbl: Path):
    """One image's boxes from its label file; ``nc`` None accepts every id >= 0."""
    real = image_size(image)
    w, h = real if real else (0, 0)
    boxes, cls, unknown = [], [], {}
    if lbl.is_file():
        for n, ln in enumerate(lbl.read_text(encoding="utf-8").splitlines(), 1):
            parts = ln.split()
            if not parts:
                continue
            try:
                c = int(float(parts[0]))
                v = [float(x) for x in parts[1:]]
            except ValueError:
                raise DataError(f"{lbl}:{n}: expected 'class cx cy w h' numbers, got {ln.strip()!r}") from None
            if len(v) == 4:
                cx, cy, bw, bh = v
                x1, y1, x2, y2 = cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2
            elif len(v) >= 6 and len(v) % 2 == 0:  # a segment: its bounding box
                xs, ys = v[0::2], v[1::2]
                x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
            else:
                raise DataError(f"{lbl}:{n}: expected 'class cx cy w h', got {len(parts)} values")
            j = len(boxes)
            boxes.append([x1 * w, y1 * h, x2 * w, y2 * h])
            if c < 0 or (nc is not None and c >= nc):
                unknown[j] = f"class id {c}"
                c = -1
            cls.append(c)
    return make_sample(image, w, h, boxes, cls, image_id, str(lbl), unknown)
