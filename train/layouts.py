"""Find a dataset's layout from the folder a user points at.

Labelling tools and dataset sites export the same three formats in many folder layouts; this
module names the one in front of it, without parsing any annotation:

* **VOC XML**: ``Annotations/`` + ``JPEGImages/``; an annotation folder (``annotations``,
  ``annots``, ``xml``, ``labels``, any case) + an image folder (``images``, ``imgs``,
  ``JPEGImages``, any case); XML beside each image (LabelImg); or split folders (``train/``,
  ``valid/``/``val/``, ``test/``) each holding one of those (Roboflow).
* **YOLO txt**: a data YAML; ``images/<split>/`` + ``labels/<split>/`` (Ultralytics, no YAML);
  ``images/`` + ``labels/``; image + ``.txt`` pairs in one folder (LabelImg YOLO mode); or
  split folders holding one of those.
* **COCO JSON**: per-split JSONs beside an image folder, ``annotations/*.json``, Roboflow's
  ``<split>/_annotations.coco.json``, CVAT and Label Studio exports.

Two layouts of different formats in one folder is an error (which one the user meant cannot
be guessed); so is none, and then the message names the layout that came closest.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from edgedet.errors import DataError
from edgedet.train.datasets import IMAGE_EXTS, split_name

IMAGE_DIRS = ("jpegimages", "images", "imgs", "img", "image")
ANNOTATION_DIRS = ("annotations", "annotation", "annots", "xml", "xmls", "labels", "label")
LABEL_DIRS = ("labels", "label")
_NOT_LABELS = {"classes", "obj", "names", "labels", "readme", "license", "licence"}  # .txt that are not labels
LOOKED_FOR = ("VOC XML (Annotations/ + JPEGImages/, images/ + annotations/ in any case, XML beside the images, "
              "train/ valid/ test/ folders), YOLO txt (data .yaml, images/<split>/ + labels/<split>/, "
              "image + .txt pairs), COCO .json")


@dataclass
class Layout:
    """A layout found: ``kind`` "voc" | "yolo" | "coco", its name in words, and where its files are.

    ``parts`` is ``[(split or None, annotation folder, image folder)]`` for VOC,
    ``[(split or None, image folder, label folder)]`` for YOLO without a YAML; ``path`` is the
    YAML or the COCO file/folder otherwise.
    """

    kind: str
    name: str
    root: Path
    path: Path | None = None
    parts: list = field(default_factory=list)
    files: int = 0


def _subdirs(d: Path) -> list[Path]:
    # scandir's entries know their type without a stat per file (a COCO image folder holds 100k+)
    try:
        return sorted(Path(e.path) for e in os.scandir(d) if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return []


def _files(d: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(d) if e.is_file())
    except OSError:
        return []


def _named(d: Path, names) -> list[Path]:
    """Sub-folders of ``d`` whose lower-case name is in ``names``, in ``names`` order."""
    subs = {p.name.lower(): p for p in _subdirs(d)}
    return [subs[n] for n in names if n in subs]


def _count(names: list[str], exts) -> int:
    return sum(1 for n in names if os.path.splitext(n)[1].lower() in exts)


def _stems(names: list[str], exts) -> set[str]:
    return {os.path.splitext(n)[0] for n in names if os.path.splitext(n)[1].lower() in exts}


def _label_stems(names: list[str]) -> set[str]:
    return {s for s in _stems(names, (".txt",)) if s.lower().split(".")[0] not in _NOT_LABELS}


class _Finder:
    """Looks at one folder; ``hints`` collects near misses for the error message."""

    def __init__(self):
        self.hints: list[tuple[int, str]] = []

    # ------------------------------------------------------------- VOC
    def voc_dir(self, d: Path):
        """``(annotation folder, image folder, n xml)`` for XML in ``d`` or its sub-folders, else None."""
        for ann in _named(d, ANNOTATION_DIRS):
            n = _count(_files(ann), (".xml",))
            if not n:
                continue
            img = next((i for i in _named(d, IMAGE_DIRS) if _count(_files(i), IMAGE_EXTS)), None)
            if img is None and _count(_files(ann), IMAGE_EXTS):
                img = ann  # images beside their XML inside the annotation folder
            if img is not None:
                return ann, img, n
            self.hints.append((n, f"VOC: {n} .xml files in {ann.name}/ but no image folder "
                                  f"(missing image directory JPEGImages/ or images/)"))
        names = _files(d)
        xml = _stems(names, (".xml",))
        if xml:
            both = xml & _stems(names, IMAGE_EXTS)
            if both:
                return d, d, len(both)
            self.hints.append((len(xml), f"VOC: {len(xml)} .xml files in {d.name}/ but no images beside them"))
        return None

    def voc(self, root: Path) -> Layout | None:
        found = self.voc_dir(root)
        if found:
            ann, img, n = found
            name = ("VOC XML beside the images" if ann == img else f"VOC {ann.name}/ + {img.name}/")
            return Layout("voc", name, root, parts=[(None, ann, img)], files=n)
        parts, n = [], 0
        for sub in _subdirs(root):
            split = split_name(sub.name)
            if split and (found := self.voc_dir(sub)):
                parts.append((split, found[0], found[1]))
                n += found[2]
        if parts:
            return Layout("voc", "VOC split folders (" + ", ".join(p[0] for p in parts) + ")", root, parts=parts, files=n)
        return None

    # ------------------------------------------------------------- YOLO
    def yolo_dir(self, d: Path, split: str | None) -> list[tuple]:
        """``[(split, image folder, label folder)]`` for YOLO labels in or under ``d``."""
        imgs = [i for i in _named(d, IMAGE_DIRS)]
        lbls = _named(d, LABEL_DIRS)
        if imgs and lbls:
            img, lbl = imgs[0], lbls[0]
            if _label_stems(_files(lbl)) and _count(_files(img), IMAGE_EXTS):
                return [(split, img, lbl)]
            parts = []  # Ultralytics: images/<split>/ + labels/<split>/
            lsubs = {p.name.lower(): p for p in _subdirs(lbl)}
            for sub in _subdirs(img):
                s = split_name(sub.name)
                lsub = lsubs.get(sub.name.lower())
                if s and lsub is not None and _label_stems(_files(lsub)):
                    parts.append((s, sub, lsub))
            if parts:
                return parts
        names = _files(d)
        labels = _label_stems(names)
        if labels:
            both = labels & _stems(names, IMAGE_EXTS)
            if both:
                return [(split, d, d)]
            self.hints.append((len(labels), f"YOLO: {len(labels)} .txt label files in {d.name}/ "
                                            f"but no images with the same names"))
        return []

    def yolo(self, root: Path) -> Layout | None:
        from edgedet.train.readers_yolo import find_yaml

        yaml = find_yaml(root)
        if yaml is not None:
            return Layout("yolo", f"YOLO data YAML ({yaml.name})", root, path=yaml, files=1)
        parts = self.yolo_dir(root, None)
        if not parts:
            for sub in _subdirs(root):
                if split := split_name(sub.name):
                    parts += self.yolo_dir(sub, split)
        if not parts:
            return None
        if parts[0][1] == parts[0][2]:
            name = "YOLO image + .txt pairs"
        elif parts[0][0] is not None and parts[0][1].parent.parent == root:
            name = f"YOLO {parts[0][1].parent.name}/<split>/ + {parts[0][2].parent.name}/<split>/"
        else:
            name = "YOLO images/ + labels/" + (" in split folders" if parts[0][0] else "")
        return Layout("yolo", name, root, parts=parts, files=len(parts))

    # ------------------------------------------------------------- COCO
    def coco(self, root: Path) -> Layout | None:
        from edgedet.train.readers_coco import find_jsons

        files = [f for f in find_jsons(root) if self._looks_coco(f)]
        if not files:
            return None
        name = ("COCO JSON per split folder (_annotations.coco.json)"
                if all(f.name == "_annotations.coco.json" for f in files) else "COCO JSON")
        return Layout("coco", name, root, path=root, files=len(files))

    def _looks_coco(self, f: Path) -> bool:
        """A peek at the first MiB: COCO files have an "images" list (huge files are given the benefit)."""
        try:
            with open(f, "rb") as fh:
                head = fh.read(1 << 20)
        except OSError:
            return False
        if b'"images"' in head or len(head) == 1 << 20:
            return True
        self.hints.append((1, f"COCO: {f.name} has no \"images\" list"))
        return False


def split_format(spec: str | os.PathLike) -> tuple[str | None, str]:
    """``"voc:PATH"`` -> ``("voc", "PATH")``; anything else -> ``(None, spec)``.

    The prefix names the format wherever a command takes a dataset path, for a folder that
    holds two formats' files (LabelImg saves VOC and YOLO side by side). A path that exists
    as written is never split.
    """
    s = os.fspath(spec)
    kind, sep, rest = s.partition(":")
    if sep and rest and kind.lower() in ("coco", "voc", "yolo") and not os.path.exists(s):
        return kind.lower(), rest
    return None, s


def detect_layout(path: str | os.PathLike, fmt: str | None = None) -> Layout:
    """The layout at ``path`` (a folder, a COCO ``.json`` or a YOLO data ``.yaml``).

    Args:
        fmt: "coco", "voc" or "yolo" to consider only that format's layouts.

    Raises:
        DataError: the path does not exist, two formats' layouts match, or none does (the
            one-line message says what was looked for and which layout came closest).
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: dataset path does not exist")
    if p.is_file():
        ext = p.suffix.lower()
        if ext == ".json" and fmt in (None, "coco"):
            return Layout("coco", "COCO JSON", p.parent, path=p, files=1)
        if ext in (".yaml", ".yml") and fmt in (None, "yolo"):
            return Layout("yolo", f"YOLO data YAML ({p.name})", p.parent, path=p, files=1)
        raise DataError(f"{p}: not a dataset file (expected a COCO .json, a YOLO data .yaml or a dataset folder)")
    finder = _Finder()
    kinds = [fmt] if fmt else ["voc", "yolo", "coco"]
    found = [lay for k in kinds if (lay := getattr(finder, k)(p)) is not None]
    if len(found) > 1:
        what = " and ".join(f"{lay.name}" for lay in found)
        raise DataError(f"{p}: ambiguous dataset folder: it holds both {what}; point at one of them "
                        f"or name the format: {' or '.join(f'{lay.kind}:{p}' for lay in found)}")
    if found:
        return found[0]
    subs = _subdirs(p)
    if len(subs) == 1 and not _count(_files(p), IMAGE_EXTS + (".xml", ".json", ".yaml")):
        try:  # a download unpacked into one more folder
            return detect_layout(subs[0], fmt)
        except DataError:
            pass
    raise DataError(f"{p}: no dataset found (looked for {LOOKED_FOR}); closest: {_closest(finder, p)}")


def _closest(finder: _Finder, p: Path) -> str:
    if finder.hints:
        return max(finder.hints, key=lambda h: h[0])[1]
    names = _files(p)
    n_img = _count(names, IMAGE_EXTS) + sum(_count(_files(d), IMAGE_EXTS) for d in _named(p, IMAGE_DIRS))
    if n_img:
        return f"{n_img} images but no annotations (.xml, .txt or COCO .json) for them"
    return "nothing (no images, .xml, .txt or .json files here)"
