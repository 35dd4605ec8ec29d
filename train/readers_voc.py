"""Pascal VOC reader: XML files in an annotation folder (or beside the images), optional splits.

Layouts (found by :mod:`edgedet.train.layouts`): ``Annotations/`` + ``JPEGImages/`` with
``ImageSets/Main/*.txt`` splits; image and annotation folders under other common names; XML
beside each image (LabelImg); and split folders ``train/``, ``valid/``, ``test/`` each holding
one of those (Roboflow's VOC export).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence

from edgedet.errors import DataError
from edgedet.train.datasets import (IMAGE_EXTS, complete_splits, image_size, make_sample, map_labels,
                                    read_class_file)
from edgedet.train.types import Dataset

_SPLIT_FILES = ("train", "val", "test", "trainval")
_CLASS_FILES = ("labels.txt", "classes.txt")

# (split or None, annotation folder, image folder); the two folders are the same for XML beside images.
Part = tuple[str | None, Path, Path]


def read_voc(root: Path, classes: Sequence[str] | None = None, ratios=(0.8, 0.1, 0.1), seed: int = 0,
             parts: list[Part] | None = None, layout: str = "") -> Dataset:
    """Read a VOC dataset.

    Boxes are taken as written (``xmin..xmax`` in pixels, VOC's 1-based corners are not
    shifted: the half-pixel difference is far below annotation noise, and google/automl's VOC
    converter does the same). Splits come from the split folders of ``parts``, else from
    ``ImageSets/Main/{train,val,test}.txt``; ``trainval.txt`` alone is split into train/val by
    ratio; neither means a ratio split.

    Args:
        root: the dataset folder.
        classes: class list; default ``labels.txt``/``classes.txt`` in ``root``, else the label
            names found (case/spacing variants of one name merged, see :func:`map_labels`).
        ratios, seed: see :func:`edgedet.train.datasets.ratio_split`.
        parts: where the XML and images are; default ``[(None, root/Annotations, root/JPEGImages)]``.
        layout: the layout's name, kept on the Dataset.

    Raises:
        DataError: a missing annotation or image folder, no XML files, an XML that does not
            parse, or a split file naming an id without an XML.
    """
    root = root.resolve()
    if parts is None:
        parts = [(None, root / "Annotations", root / "JPEGImages")]
    xmls: dict[Path, str | None] = {}
    for split, ann_dir, img_dir in parts:
        if not ann_dir.is_dir():
            raise DataError(f"{root}: no {ann_dir.name}/ folder (not a VOC dataset)")
        if not img_dir.is_dir():
            raise DataError(f"{root}: missing image directory {img_dir.name}/")
        found = sorted(p for p in ann_dir.iterdir() if p.suffix.lower() == ".xml")
        if not found:
            raise DataError(f"{ann_dir}: empty dataset (no .xml annotation files)")
        xmls.update({p: split for p in found})
    ids = {p: i + 1 for i, p in enumerate(sorted(xmls))}

    own: dict[str, list[Path]] = {}
    if len(parts) == 1 and parts[0][0] is None:
        own = _read_split_files(root / "ImageSets" / "Main", {p.stem: p for p in xmls})
    else:
        for p, split in xmls.items():
            if split is not None:
                own.setdefault(split, []).append(p)
    wanted = sorted({p for v in own.values() for p in v}) if own else sorted(xmls)
    img_dirs = {ann: img for _, ann, img in parts}
    indexes = {img: _image_index(img) for img in set(img_dirs.values())}
    parsed = {p: _parse_xml(p, img_dirs[p.parent], indexes[img_dirs[p.parent]]) for p in wanted}

    if classes is None:
        class_file = next((root / f for f in _CLASS_FILES if (root / f).is_file()), None)
        if class_file is not None:
            classes = read_class_file(class_file)
    classes, relabel = map_labels([n for p in parsed.values() for n in p["names"]], classes)
    index = {n: i for i, n in enumerate(classes)}

    samples = {}
    for xml, p in parsed.items():
        cls, unknown, relabelled = [], {}, {}
        for j, name in enumerate(p["names"]):
            if name in relabel:
                relabelled[j] = name
                name = relabel[name]
            cls.append(index.get(name, -1))
            if name not in index:
                unknown[j] = name
        s = make_sample(p["image"], p["width"], p["height"], p["boxes"], cls, ids[xml], p["xml"], unknown)
        s.size_filled, s.relabelled = p["size_filled"], relabelled
        samples[xml] = s
    splits = {k: [samples[p] for p in v] for k, v in own.items()}
    if "trainval" in splits:
        trainval = splits.pop("trainval")
        if "train" not in splits and "val" not in splits:
            splits["train"] = trainval  # complete_splits carves val out of it
    splits = complete_splits(splits, [samples[p] for p in wanted], ratios, seed)
    no_box = [(p, n) for p, d in parsed.items() for n in d["no_box"]]
    notes = [f"{len(no_box)} <object>(s) without <bndbox> left out (first: {no_box[0][1]!r} in {no_box[0][0]})"] if no_box else []
    return Dataset(str(root), list(classes), splits, "voc", layout, notes)


def _read_split_files(main_dir: Path, stems: dict[str, Path]) -> dict[str, list[Path]]:
    out = {}
    for name in _SPLIT_FILES:
        f = main_dir / f"{name}.txt"
        if not f.is_file():
            continue
        # Lines are "<id>" (or "<id> <flag>" in the per-class files, which we do not read).
        ids = [ln.split()[0] for ln in f.read_text(encoding="utf-8").splitlines() if ln.strip()]
        missing = [s for s in ids if s not in stems]
        if missing:
            raise DataError(f"{f}: {len(missing)} ids have no Annotations/<id>.xml (first: {missing[0]!r})")
        out[name] = [stems[s] for s in dict.fromkeys(ids)]  # drop repeated ids, keep order
    return out


def _image_index(img_dir: Path) -> dict[str, Path]:
    """Images of a folder by lower-case file name and by stem (one listing, not a stat per guess)."""
    out: dict[str, Path] = {}
    for p in sorted(img_dir.iterdir()):
        if p.suffix.lower() in IMAGE_EXTS:
            out.setdefault(p.name.lower(), p)
            out.setdefault(p.stem, p)
    return out


def _parse_xml(xml_path: Path, img_dir: Path, index: dict[str, Path]) -> dict:
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise DataError(f"{xml_path}: not valid XML ({exc})") from None
    image = _image_path(root.findtext("filename", "").strip(), xml_path.stem, img_dir, index)
    width = _num(root.findtext("size/width"), xml_path, "size/width")
    height = _num(root.findtext("size/height"), xml_path, "size/height")
    filled = not width or not height
    if filled:
        # Some exporters write 0 or leave <size> out: the header is the only truth we have.
        real = image_size(image)
        width, height = real if real else (0, 0)
    names, boxes, no_box = [], [], []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        if bb is None:  # a point or polygon label some tools write: no box to learn
            no_box.append(obj.findtext("name") or "")
            continue
        names.append(obj.findtext("name") or "")  # as written: map_labels reports spacing variants
        boxes.append([_num(bb.findtext(k), xml_path, f"bndbox/{k}") for k in ("xmin", "ymin", "xmax", "ymax")])
    return {"image": image, "width": int(round(width)), "height": int(round(height)), "size_filled": filled,
            "names": names, "boxes": boxes, "xml": str(xml_path), "no_box": no_box}


def _image_path(filename: str, stem: str, img_dir: Path, index: dict[str, Path]) -> Path:
    """The image an XML describes: its ``<filename>`` in any case, else the XML's own stem.

    The stem fallback covers exporters that write a stale or extension-less ``<filename>``.
    """
    name = Path(filename.replace("\\", "/")).name if filename else ""
    for key in (name.lower(), name, stem):
        if key and key in index:
            return index[key]
    return img_dir / (name or f"{stem}.jpg")  # does not exist: the checker reports it


def _num(text: str | None, xml_path: Path, field: str) -> float:
    if text is None or not text.strip():
        if field.startswith("size"):
            return 0.0
        raise DataError(f"{xml_path}: missing <{field}>")
    try:
        return float(text)
    except ValueError:
        raise DataError(f"{xml_path}: <{field}> is {text.strip()!r}, not a number") from None
