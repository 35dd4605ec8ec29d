"""Write one small detection dataset in the folder layouts that labelling tools and dataset sites export.

Every writer produces the same images (real JPEG/PNG/BMP/WebP files, some grayscale, CMYK or
with alpha) and boxes; :func:`write_coco` writes the equivalent COCO JSON to compare with.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["bird", "cat", "dog"]
# name, split, (w, h), PIL mode, boxes [(class, (x1, y1, x2, y2))]; "g" is a background image.
IMAGES = [
    ("a.jpg", "train", (64, 48), "RGB", [("cat", (2, 3, 30, 40)), ("dog", (10, 5, 60, 44))]),
    ("b.png", "train", (40, 56), "L", [("bird", (0, 0, 20, 20))]),
    ("c.JPG", "train", (48, 48), "RGB", [("cat", (5, 5, 45, 45))]),
    ("d.bmp", "train", (64, 32), "RGB", [("dog", (1, 1, 30, 30)), ("bird", (30, 2, 60, 30))]),
    ("g.jpg", "train", (32, 40), "RGB", []),
    ("e.webp", "val", (32, 32), "RGBA", [("cat", (4, 4, 28, 28))]),
    ("f.jpeg", "test", (56, 40), "CMYK", [("dog", (6, 6, 50, 34))]),
]
SPLIT_DIRS = {"train": "train", "val": "valid", "test": "test"}


def image(path: Path, size, mode: str = "RGB", seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    arr = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    im = Image.fromarray(arr).convert(mode)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP"}[path.suffix.lower()]
    im.save(path, fmt)
    return path


def _images(folder_of):
    for i, (name, split, size, mode, boxes) in enumerate(IMAGES):
        image(folder_of(split) / name, size, mode, seed=i)
        yield name, split, size, boxes


def write_voc_xml(path: Path, name: str, size, boxes) -> None:
    """A Pascal VOC annotation for image ``name`` of ``size`` (w, h) with ``[(class, (x1, y1, x2, y2))]``."""
    ann = ET.Element("annotation")
    ET.SubElement(ann, "filename").text = name
    sz = ET.SubElement(ann, "size")
    ET.SubElement(sz, "width").text, ET.SubElement(sz, "height").text = str(size[0]), str(size[1])
    for cls, box in boxes:
        o = ET.SubElement(ann, "object")
        ET.SubElement(o, "name").text = cls
        bb = ET.SubElement(o, "bndbox")
        for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box):
            ET.SubElement(bb, k).text = str(v)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(ann).write(path)


def _txt(path: Path, size, boxes, names=CLASSES) -> None:
    if not boxes:
        return  # YOLO: an image without a label file is a background image
    w, h = size
    lines = [f"{names.index(c)} {(b[0] + b[2]) / 2 / w!r} {(b[1] + b[3]) / 2 / h!r} {(b[2] - b[0]) / w!r} "
             f"{(b[3] - b[1]) / h!r}" for c, b in boxes]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _stem(name: str) -> str:
    return name.rsplit(".", 1)[0]


# ----------------------------------------------------------------------------- VOC
def voc_standard(root: Path) -> None:
    for name, split, size, boxes in _images(lambda s: root / "JPEGImages"):
        write_voc_xml(root / "Annotations" / f"{_stem(name)}.xml", name, size, boxes)
    main = root / "ImageSets" / "Main"
    main.mkdir(parents=True)
    for split in ("train", "val", "test"):
        (main / f"{split}.txt").write_text("".join(f"{_stem(n)}\n" for n, s, *_ in IMAGES if s == split))


def voc_folders(img: str, ann: str):
    def write(root: Path) -> None:
        for name, _, size, boxes in _images(lambda s: root / img):
            write_voc_xml(root / ann / f"{_stem(name)}.xml", name, size, boxes)
    return write


def voc_beside(root: Path) -> None:
    for name, _, size, boxes in _images(lambda s: root):
        write_voc_xml(root / f"{_stem(name)}.xml", name, size, boxes)


def voc_roboflow(root: Path) -> None:
    for name, split, size, boxes in _images(lambda s: root / SPLIT_DIRS[s]):
        write_voc_xml(root / SPLIT_DIRS[split] / f"{_stem(name)}.xml", name, size, boxes)
    (root / "README.roboflow.txt").write_text("exported from roboflow\n")


# ----------------------------------------------------------------------------- YOLO
def yolo_yaml(root: Path) -> None:
    for name, split, size, boxes in _images(lambda s: root / "images" / s):
        _txt(root / "labels" / split / f"{_stem(name)}.txt", size, boxes)
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\ntest: images/test\n"
                                    "names:\n" + "".join(f"  {i}: {n}\n" for i, n in enumerate(CLASSES)))


def yolo_roboflow(root: Path) -> None:
    for name, split, size, boxes in _images(lambda s: root / SPLIT_DIRS[s] / "images"):
        _txt(root / SPLIT_DIRS[split] / "labels" / f"{_stem(name)}.txt", size, boxes)
    (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\ntest: ../test/images\n\n"
                                    f"nc: {len(CLASSES)}\nnames: {CLASSES!r}\n")
    (root / "README.dataset.txt").write_text("a dataset\n")


def yolo_ultralytics(root: Path) -> None:
    for name, split, size, boxes in _images(lambda s: root / "images" / s):
        _txt(root / "labels" / split / f"{_stem(name)}.txt", size, boxes)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")


def yolo_pairs(class_file: str | None):
    def write(root: Path) -> None:
        for name, _, size, boxes in _images(lambda s: root):
            _txt(root / f"{_stem(name)}.txt", size, boxes)
        if class_file:
            (root / class_file).write_text("\n".join(CLASSES) + "\n")
    return write


def yolo_folders(root: Path) -> None:
    for name, _, size, boxes in _images(lambda s: root / "images"):
        _txt(root / "labels" / f"{_stem(name)}.txt", size, boxes)
    (root / "obj.names").write_text("\n".join(CLASSES) + "\n")


# ----------------------------------------------------------------------------- COCO
def write_coco(root: Path, *, split: bool, cat_ids=(1, 2, 3), names=CLASSES, json_of=None, folder_of=None,
               file_name=lambda split, name: name) -> None:
    """COCO JSON of the dataset: one per split when ``split``, else one file.

    ``json_of(split)`` is where each JSON goes, ``folder_of(split)`` where its images go and
    ``file_name(split, name)`` what the JSON calls them (relative to that folder's base).
    """
    json_of = json_of or (lambda s: root / "annotations" / (f"instances_{s}.json" if split else "labels.json"))
    folder_of = folder_of or (lambda s: root / "images" / (s if split else ""))
    cats = [{"id": i, "name": n, "supercategory": "thing"} for i, n in zip(cat_ids, names)]
    files: dict[Path, dict] = {}
    for i, (name, s, size, mode, boxes) in enumerate(IMAGES):
        rel = file_name(s, name)
        image(folder_of(s) / rel, size, mode, seed=i)
        d = files.setdefault(json_of(s), {"images": [], "annotations": [], "categories": cats})
        d["images"].append({"id": 100 + i, "file_name": rel, "width": size[0], "height": size[1]})
        for c, b in boxes:
            d["annotations"].append({"id": len(d["annotations"]) + 1, "image_id": 100 + i, "iscrowd": 0,
                                     "category_id": cat_ids[CLASSES.index(c)], "area": 1.0,
                                     "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
    for f, d in files.items():
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(d))


def coco_roboflow(root: Path) -> None:
    write_coco(root, split=True, json_of=lambda s: root / SPLIT_DIRS[s] / "_annotations.coco.json",
               folder_of=lambda s: root / SPLIT_DIRS[s])


def coco_cvat(root: Path) -> None:
    # CVAT: annotations/instances_default.json, file_name keeps the task's sub-folders
    write_coco(root, split=False, json_of=lambda s: root / "annotations" / "instances_default.json",
               folder_of=lambda s: root / "images", file_name=lambda s, n: f"{s}_part/{n}")


def coco_label_studio(root: Path) -> None:
    # Label Studio: result.json beside images/, file_name "images/<name>"
    write_coco(root, split=False, json_of=lambda s: root / "result.json", folder_of=lambda s: root,
               file_name=lambda s, n: f"images/{n}")


def coco_noncontiguous(root: Path) -> None:
    write_coco(root, split=True, cat_ids=(3, 7, 12), json_of=lambda s: root / f"{s}.json",
               folder_of=lambda s: root / s)


# name: (writer, has its own splits)
LAYOUTS = {
    "voc-Annotations-JPEGImages-ImageSets": (voc_standard, True),
    "voc-images-annotations": (voc_folders("images", "annotations"), False),
    "voc-Imgs-Annots": (voc_folders("Imgs", "Annots"), False),
    "voc-IMAGES-XML": (voc_folders("IMAGES", "XML"), False),
    "voc-imgs-labels": (voc_folders("imgs", "labels"), False),
    "voc-labelimg-beside": (voc_beside, False),
    "voc-roboflow-splits": (voc_roboflow, True),
    "yolo-yaml": (yolo_yaml, True),
    "yolo-roboflow-yaml": (yolo_roboflow, True),
    "yolo-ultralytics-no-yaml": (yolo_ultralytics, True),
    "yolo-labelimg-pairs-classes.txt": (yolo_pairs("classes.txt"), False),
    "yolo-pairs-names.txt": (yolo_pairs("names.txt"), False),
    "yolo-images-labels-obj.names": (yolo_folders, False),
    "yolo-no-class-names": (yolo_pairs(None), False),
    "coco-roboflow-splits": (coco_roboflow, True),
    "coco-cvat-subfolders": (coco_cvat, False),
    "coco-label-studio": (coco_label_studio, False),
    "coco-noncontiguous-ids": (coco_noncontiguous, True),
}
