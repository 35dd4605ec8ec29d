"""Pascal VOC reader: ``Annotations/*.xml`` + ``JPEGImages/`` + ``ImageSets/Main/*.txt`` splits."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence

from edgedet.errors import DataError
from edgedet.train.datasets import IMAGE_EXTS, complete_splits, image_size, make_sample, read_class_file
from edgedet.train.types import Dataset

_SPLIT_FILES = ("train", "val", "test", "trainval")
_CLASS_FILES = ("labels.txt", "classes.txt")


def read_voc(root: Path, classes: Sequence[str] | None = None, ratios=(0.8, 0.1, 0.1), seed: int = 0) -> Dataset:
    """Read a VOC-layout folder.

    Boxes are taken as written (``xmin..xmax`` in pixels, VOC's 1-based corners are not
    shifted: the half-pixel difference is far below annotation noise, and google/automl's VOC
    converter does the same). Splits come from ``ImageSets/Main/{train,val,test}.txt``;
    ``trainval.txt`` alone is split into train/val by ratio; no split files means a ratio split.

    Args:
        root: the folder holding ``Annotations/`` and ``JPEGImages/``.
        classes: class list; default ``labels.txt``/``classes.txt`` in ``root``, else the sorted
            label names found in the XMLs.
        ratios, seed: see :func:`edgedet.train.datasets.ratio_split`.

    Raises:
        DataError: no ``Annotations/`` or ``JPEGImages/`` folder, no XML files, an XML that does
            not parse, or a split file naming an id without an XML.
    """
    root = root.resolve()
    ann_dir, img_dir = root / "Annotations", root / "JPEGImages"
    if not ann_dir.is_dir():
        raise DataError(f"{root}: no Annotations/ folder (not a VOC dataset)")
    if not img_dir.is_dir():
        raise DataError(f"{root}: missing image directory JPEGImages/")
    stems = sorted(p.stem for p in ann_dir.glob("*.xml"))
    if not stems:
        raise DataError(f"{ann_dir}: empty dataset (no .xml annotation files)")
    ids = {s: i + 1 for i, s in enumerate(stems)}

    own = _read_split_files(root / "ImageSets" / "Main", ids)
    wanted = sorted({s for v in own.values() for s in v}) if own else stems
    parsed = {s: _parse_xml(ann_dir / f"{s}.xml", img_dir) for s in wanted}

    if classes is None:
        class_file = next((root / f for f in _CLASS_FILES if (root / f).is_file()), None)
        if class_file is not None:
            classes = read_class_file(class_file)
        else:
            classes = sorted({name for p in parsed.values() for name in p["names"]})
    index = {n: i for i, n in enumerate(classes)}

    samples = {}
    for stem, p in parsed.items():
        cls, unknown = [], {}
        for j, name in enumerate(p["names"]):
            cls.append(index.get(name, -1))
            if name not in index:
                unknown[j] = name
        samples[stem] = make_sample(p["image"], p["width"], p["height"], p["boxes"], cls, ids[stem],
                                    p["xml"], unknown)
    splits = {k: [samples[s] for s in v] for k, v in own.items()}
    if "trainval" in splits:
        trainval = splits.pop("trainval")
        if "train" not in splits and "val" not in splits:
            splits["train"] = trainval  # complete_splits carves val out of it
    splits = complete_splits(splits, [samples[s] for s in wanted], ratios, seed)
    return Dataset(str(root), list(classes), splits, "voc")


def _read_split_files(main_dir: Path, ids: dict[str, int]) -> dict[str, list[str]]:
    out = {}
    for name in _SPLIT_FILES:
        f = main_dir / f"{name}.txt"
        if not f.is_file():
            continue
        # Lines are "<id>" (or "<id> <flag>" in the per-class files, which we do not read).
        stems = [ln.split()[0] for ln in f.read_text(encoding="utf-8").splitlines() if ln.strip()]
        missing = [s for s in stems if s not in ids]
        if missing:
            raise DataError(f"{f}: {len(missing)} ids have no Annotations/<id>.xml (first: {missing[0]!r})")
        out[name] = list(dict.fromkeys(stems))  # drop repeated ids, keep order
    return out


def _parse_xml(xml_path: Path, img_dir: Path) -> dict:
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise DataError(f"{xml_path}: not valid XML ({exc})") from None
    image = _image_path(root.findtext("filename", "").strip(), xml_path.stem, img_dir)
    width = _num(root.findtext("size/width"), xml_path, "size/width")
    height = _num(root.findtext("size/height"), xml_path, "size/height")
    if not width or not height:
        # Some exporters write 0 or leave <size> out: the header is the only truth we have.
        real = image_size(image)
        width, height = real if real else (0, 0)
    names, boxes = [], []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        if bb is None:
            raise DataError(f"{xml_path}: <object> {obj.findtext('name')!r} without <bndbox>")
        names.append((obj.findtext("name") or "").strip())
        boxes.append([_num(bb.findtext(k), xml_path, f"bndbox/{k}") for k in ("xmin", "ymin", "xmax", "ymax")])
    return {"image": image, "width": int(round(width)), "height": int(round(height)),
            "names": names, "boxes": boxes, "xml": str(xml_path)}


def _image_path(filename: str, stem: str, img_dir: Path) -> Path:
    if filename:
        p = img_dir / filename
        if p.is_file() or Path(filename).suffix:
            return p
    for ext in IMAGE_EXTS + tuple(e.upper() for e in IMAGE_EXTS):
        p = img_dir / f"{filename or stem}{ext}"
        if p.is_file():
            return p
    return img_dir / f"{stem}.jpg"  # does not exist: the checker reports it


def _num(text: str | None, xml_path: Path, field: str) -> float:
    if text is None or not text.strip():
        if field.startswith("size"):
            return 0.0
        raise DataError(f"{xml_path}: missing <{field}>")
    try:
        return float(text)
    except ValueError:
        raise DataError(f"{xml_path}: <{field}> is {text.strip()!r}, not a number") from None
