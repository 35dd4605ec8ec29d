"""Dataset checks: find bad boxes and images, file by file, and apply a policy.

Checks, per image: the image file is missing, unreadable, truncated or in a format training
cannot decode; the annotated size disagrees with the real one (from the header, as displayed:
EXIF rotation applied); no boxes at all. Repairs the readers made are listed too, never
silent: a size that was 0 or missing and came from the image, and a label that differed from a
class only in case or spacing and was mapped onto it. Per box: class not in the
class list; non-finite, inverted or degenerate (< 1 px wide or high) coordinates; outside the
image; a duplicate of an earlier box (same class, IoU > 0.95).

Policies (what training does before its first step, and what ``edgedet data check`` reports):

=================  ===================  =========================  =========
problem            ``skip`` (default)   ``fix``                    ``strict``
=================  ===================  =========================  =========
missing/unreadable skip image           skip image                 fail
size mismatch      skip image           use the real size          fail
inverted box       skip box             swap the corners           fail
degenerate box     skip box             skip box                   fail
box partly out     skip box             clip to the image          fail
box fully out      skip box             skip box                   fail
duplicate box      skip box             skip box                   fail
size filled in     keep (listed)        keep (listed)              fail
label relabelled   keep (listed)        keep (listed)              fail
no boxes at all    keep (background)    keep (background)          fail
unknown class      fail                 fail                       fail
=================  ===================  =========================  =========

Unknown classes always fail: dropping those boxes would teach the model that real objects
are background, so a class list that disagrees with the labels must be fixed at the source.
Coordinates up to 1 px past the border are clipped silently (VOC's 1-based corners and
rounding of normalised YOLO coordinates produce them); a box touching the border is fine.
"""
from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgedet.errors import DataError, did_you_mean
from edgedet.train.types import Dataset, Sample

POLICIES = ("skip", "fix", "strict")
DUPLICATE_IOU = 0.95
MIN_BOX_PX = 1.0
BORDER_TOLERANCE_PX = 1.0
# What every stage decodes (through edgedet.runtime.preprocess.load_image); MPO is how Pillow
# names the JPEGs many phone cameras write.
TRAINABLE_FORMATS = ("JPEG", "MPO", "PNG", "BMP", "WEBP", "GIF", "TIFF")


@dataclass(frozen=True)
class Issue:
    """One problem found in one file.

    Attributes:
        file: the file at fault, relative to the dataset root (annotation file for box
            problems, the image for image problems; COCO names ``json [image]``).
        reason: what is wrong, e.g. "degenerate box (zero width and height)".
        action: what the policy did: "skipped box", "skipped image", "clipped box",
            "swapped corners", "used real size", "kept as background" or "error".
        kind: a stable code: missing_image, unreadable_image, size_mismatch, empty_image,
            unknown_class, nonfinite_box, inverted_box, degenerate_box, outside_box, duplicate_box,
            size_filled, relabelled.
        box: the box as annotated, xyxy pixels, or None for image problems.
        label: the box's class name (or the unknown label), or None.
        split: the split the sample belongs to.
    """

    file: str
    reason: str
    action: str
    kind: str
    box: tuple[float, float, float, float] | None = None
    label: str | None = None
    split: str = ""

    def __str__(self) -> str:
        where = self.file
        if self.box is not None:
            coords = ", ".join(f"{v:g}" for v in self.box)
            where += f": {self.label} box [{coords}]" if self.label else f": box [{coords}]"
        return f"{where}: {self.reason} -> {self.action}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class DataCheckError(DataError):
    """A check that fails under the policy; ``issues`` holds everything found."""

    def __init__(self, message: str, issues: list[Issue]):
        super().__init__(message)
        self.issues = issues


def check_dataset(ds: Dataset, policy: str = "skip", *, decode: bool = True,
                  workers: int | None = None, progress: bool = False) -> tuple[Dataset, list[Issue]]:
    """Check every sample of every split and return the cleaned dataset.

    Args:
        ds: a dataset from :func:`edgedet.train.datasets.load_dataset`.
        policy: "skip", "fix" or "strict" (see the module docstring).
        decode: also decode each image (JPEG at 1/8 scale, which still reads every byte) to
            catch truncated files; header-only when False.
        workers: decode threads (Pillow releases the GIL while decoding); default min(4, cpus).
        progress: show a tqdm bar.

    Returns:
        ``(clean, issues)``: a new Dataset with the same class names and splits, without the
        skipped boxes/images and with the fixes applied, and the issues in file order.

    Raises:
        DataCheckError: under "strict" when anything was found, and under every policy when a
            box has a class not in the class list. The message is one line; ``.issues`` has all.
    """
    if policy not in POLICIES:
        raise DataError(f"unknown check policy {policy!r}{did_you_mean(policy, POLICIES)} (choose from {', '.join(POLICIES)})")
    jobs = [(name, s) for name, samples in ds.splits.items() for s in samples]
    paths = list(dict.fromkeys(s.image_path for _, s in jobs))
    workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(partial(_probe_image, decode=decode), paths)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(paths), desc="check images", unit="img", leave=False)
        real = dict(zip(paths, results))

    per_sample: list[tuple[tuple[str, str], list[Issue]]] = []
    splits: dict[str, list[Sample]] = {name: [] for name in ds.splits}
    for name, s in jobs:
        found: list[Issue] = []
        clean = _check_sample(s, real[s.image_path], ds, policy, name, found)
        if clean is not None:
            splits[name].append(clean)
        if found:
            per_sample.append(((s.ann_path or s.image_path, s.image_path), found))
    # File by file in path order (not split order); within a file, in the order found.
    per_sample.sort(key=lambda kv: kv[0])
    issues = [i for _, found in per_sample for i in found]

    unknown = [i for i in issues if i.kind == "unknown_class"]
    if unknown:
        labels = sorted({i.label for i in unknown})
        hint = did_you_mean(labels[0], ds.class_names, cutoff=0.6) if labels else ""
        nfiles = len({i.file for i in unknown})
        names = list(ds.class_names)
        listed = ", ".join(names[:8]) + (f", ... ({len(names)} classes)" if len(names) > 8 else "")
        raise DataCheckError(
            f"{ds.root}: class list disagrees with the labels: {len(unknown)} boxes in {nfiles} files have "
            f"classes not in [{listed}]: {', '.join(map(repr, labels[:5]))}{hint} (first: {unknown[0].file})",
            issues)
    if policy == "strict" and issues:
        raise DataCheckError(f"{ds.root}: {len(issues)} problems (--strict); first: {issues[0]}", issues)
    return Dataset(ds.root, list(ds.class_names), splits, ds.source_format, ds.layout, list(ds.notes)), issues


def _probe_image(path: str, decode: bool = False):
    """``(width, height)``, None when the file is missing, or the decoder's error message.

    ``decode`` decodes the pixels too, to catch truncation; without it only the header is read.
    """
    from PIL import Image

    from edgedet.runtime.preprocess import displayed_size

    if not os.path.isfile(path):
        return None
    try:
        with Image.open(path) as im:
            if im.format not in TRAINABLE_FORMATS:
                return f"{im.format} images are not supported (training decodes {', '.join(TRAINABLE_FORMATS)})"
            size = displayed_size(im)
            if decode:
                # JPEG draft mode decodes at 1/8 scale: ~3x faster, yet still consumes the
                # whole entropy-coded stream, so a truncated file still fails.
                im.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
                im.load()
        return size
    except Exception as exc:  # Pillow raises many types for garbage files
        first = str(exc).splitlines()[0] if str(exc) else ""
        return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _check_sample(s: Sample, real, ds: Dataset, policy: str, split: str, issues: list[Issue]) -> Sample | None:
    root = Path(ds.root)
    img_file = _rel(s.image_path, root)
    ann_file = _rel(s.ann_path, root) if s.ann_path else img_file
    if ds.source_format == "coco":  # one JSON for many images: name both
        ann_file = f"{ann_file} [{img_file}]"

    def add(file, kind, reason, action, box=None, label=None):
        issues.append(Issue(file, reason, action, kind,
                            None if box is None else tuple(float(v) for v in box), label, split))

    if not isinstance(real, tuple):
        kind = "missing_image" if real is None else "unreadable_image"
        reason = "image file not found" if real is None else f"image cannot be read: {real}"
        add(img_file, kind, reason, "error" if policy == "strict" else "skipped image")
        return None
    width, height = s.width, s.height
    if s.size_filled:
        add(ann_file, "size_filled", "image size missing or 0 in the annotation",
            "error" if policy == "strict" else f"used the image's {real[0]}x{real[1]}")
    if (width, height) != real:
        reason = f"annotation size {width}x{height} disagrees with the image's {real[0]}x{real[1]}"
        swapped = (height, width) == real
        if swapped:
            # boxes drawn on the other orientation: no safe repair, so --fix skips it too
            reason += " (width and height swapped: EXIF rotation? the boxes' orientation is unknown)"
        if policy == "fix" and not swapped:
            add(ann_file, "size_mismatch", reason, "used real size")
            width, height = real
        else:
            add(ann_file, "size_mismatch", reason, "error" if policy == "strict" else "skipped image")
            return None
    if s.num_boxes == 0:
        add(ann_file, "empty_image", "no boxes", "error" if policy == "strict" else "kept as background")
        return dataclasses.replace(s, width=width, height=height, unknown_labels={})

    keep_boxes, keep_cls, keep_idx = [], [], []
    for j, (box, c) in enumerate(zip(s.boxes.astype(np.float64), s.classes.tolist())):
        label = ds.class_names[c] if 0 <= c < len(ds.class_names) else s.unknown_labels.get(j, f"class id {c}")
        if not 0 <= c < len(ds.class_names):
            named = f"class {label!r}" if j in s.unknown_labels else label
            add(ann_file, "unknown_class", f"{named} is not in the class list", "error", box, label)
            continue
        if j in s.relabelled:
            add(ann_file, "relabelled", f"label {s.relabelled[j]!r} differs from class {label!r} only in case or spacing",
                "error" if policy == "strict" else f"used {label!r}", box, label)
        kept = _check_box(box, width, height, policy, lambda *a: add(ann_file, *a, box, label))
        if kept is None:
            continue
        dup = _duplicate_of(np.array(kept), c, keep_boxes, keep_cls)
        if dup is not None:
            add(ann_file, "duplicate_box",
                f"duplicate of box #{keep_idx[dup] + 1} (IoU {_iou(keep_boxes[dup], kept):.2f})",
                "error" if policy == "strict" else "skipped box", box, label)
            continue
        keep_boxes.append(kept)
        keep_cls.append(c)
        keep_idx.append(j)
    if not keep_boxes:
        add(ann_file, "empty_image", "no valid boxes left", "error" if policy == "strict" else "skipped image")
        return None
    return dataclasses.replace(
        s, width=int(width), height=int(height), unknown_labels={},
        boxes=np.asarray(keep_boxes, dtype=np.float32).reshape(-1, 4),
        classes=np.asarray(keep_cls, dtype=np.int32))


def _check_box(box, width: int, height: int, policy: str, add) -> list[float] | None:
    """One box (x1, y1, x2, y2 in pixels) against a width x height image: the box to keep,
    clipped to the image (and with swapped corners under ``fix``), or None to drop it.
    ``add(kind, reason, action)`` records each finding."""
    bad = "error" if policy == "strict" else "skipped box"
    if not np.isfinite(box).all():
        add("nonfinite_box", "coordinates are not finite numbers", bad)
        return None
    x1, y1, x2, y2 = box
    if (x2 < x1 and abs(x2 - x1) >= MIN_BOX_PX) or (y2 < y1 and abs(y2 - y1) >= MIN_BOX_PX):
        if policy != "fix":
            add("inverted_box", "inverted box (max corner before min corner)", bad)
            return None
        add("inverted_box", "inverted box (max corner before min corner)", "swapped corners")
        x1, x2, y1, y2 = min(x1, x2), max(x1, x2), min(y1, y2), max(y1, y2)
    w, h = x2 - x1, y2 - y1
    if w < MIN_BOX_PX or h < MIN_BOX_PX:
        what = ("zero width and height" if w <= 0 and h <= 0 else "zero width" if w <= 0 else
                "zero height" if h <= 0 else f"{max(w, 0):g}x{max(h, 0):g} px")
        add("degenerate_box", f"degenerate box ({what})", bad)
        return None
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        add("outside_box", f"box entirely outside the {width}x{height} image", bad)
        return None
    t = BORDER_TOLERANCE_PX
    if x1 < -t or y1 < -t or x2 > width + t or y2 > height + t:
        reason = f"box extends outside the {width}x{height} image"
        cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
        if policy != "fix" or cx2 - cx1 < MIN_BOX_PX or cy2 - cy1 < MIN_BOX_PX:
            add("outside_box", reason, bad)
            return None
        add("outside_box", reason, "clipped box")
    return [max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)]


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _duplicate_of(box, c, boxes, classes) -> int | None:
    for k, (b, ck) in enumerate(zip(boxes, classes)):
        if ck == c and _iou(b, box) > DUPLICATE_IOU:
            return k
    return None


def _rel(path: str, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def load_checked(path, policy: str = "skip", *, classes=None, log=None, max_lines: int = 20, **load_kwargs) -> Dataset:
    """Load a dataset and run the checks, as training does before its first step.

    Args:
        path, classes, load_kwargs: see :func:`edgedet.train.datasets.load_dataset`.
        policy: check policy.
        log: callable for warning lines (default: print to stderr); at most ``max_lines`` issue
            lines then a count, so a messy dataset does not flood the training log.

    Returns:
        The clean Dataset.
    """
    import sys

    from edgedet.train.datasets import load_dataset

    log = log or (lambda m: print(m, file=sys.stderr))
    ds = load_dataset(path, classes=classes, **load_kwargs)
    for note in ds.notes:
        log(f"note: {note}")
    clean, issues = check_dataset(ds, policy)
    for i in issues[:max_lines]:
        log(f"warning: {i}")
    if len(issues) > max_lines:
        log(f"warning: ... and {len(issues) - max_lines} more (run `edgedet data check {path}` for all)")
    return clean


def summarize(issues: list[Issue]) -> str:
    """``"2 issues: 2 boxes skipped"``-style one-liner."""
    if not issues:
        return "no issues"
    from collections import Counter

    acts = Counter(i.action for i in issues)
    return f"{len(issues)} issue{'s' if len(issues) != 1 else ''} (" + ", ".join(f"{a}: {n}" for a, n in acts.items()) + ")"
