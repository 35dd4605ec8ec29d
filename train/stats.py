"""Dataset statistics, the warnings shown before training, and the ``data stats --plot`` picture.

Only numpy and Pillow (matplotlib for the plot, imported inside it); never TensorFlow.
"""
from __future__ import annotations

import os
from collections import Counter

import numpy as np

from edgedet.train.types import Dataset

# COCO's object-size areas (px^2): small < 32^2 <= medium < 96^2 <= large.
SIZE_BUCKETS = (("small", 0, 32 ** 2), ("medium", 32 ** 2, 96 ** 2), ("large", 96 ** 2, float("inf")))
FEW_BOXES = 10
SMALL_IMAGE_FACTOR = 4


def _class_name(ds: Dataset, c: int) -> str:
    return ds.class_names[c] if 0 <= c < len(ds.class_names) else "<unknown>"


def _areas(s) -> np.ndarray:
    wh = np.clip(s.boxes[:, 2:] - s.boxes[:, :2], 0, None)
    return wh[:, 0] * wh[:, 1]


def dataset_stats(ds: Dataset) -> dict:
    """Counts for reports: images and boxes per split and class, box sizes.

    Returns:
        dict with ``format``, ``layout``, ``classes``, ``splits`` {name: {images, boxes,
        empty_images}}, ``boxes_per_class`` {name: n}, ``boxes_per_class_split`` {split:
        {name: n}}, ``box_size_px`` {min, median, max} of sqrt(w*h), ``box_size_coco``
        {split: {small, medium, large}} and ``image_sizes`` {"WxH": n} (the most common five).
    """
    per_class, sizes, img_sizes, splits, per_split, buckets = Counter(), [], Counter(), {}, {}, {}
    for name, samples in ds.splits.items():
        nb = sum(s.num_boxes for s in samples)
        splits[name] = {"images": len(samples), "boxes": nb, "empty_images": sum(1 for s in samples if not s.num_boxes)}
        cs, bk = Counter(), Counter()
        for s in samples:
            img_sizes[f"{s.width}x{s.height}"] += 1
            cs.update(_class_name(ds, c) for c in s.classes.tolist())
            if s.num_boxes:
                a = _areas(s)
                sizes.append(np.sqrt(a))
                for label, lo, hi in SIZE_BUCKETS:
                    bk[label] += int(((a >= lo) & (a < hi)).sum())
        per_class.update(cs)
        per_split[name] = {n: cs.get(n, 0) for n in ds.class_names}
        buckets[name] = {label: bk.get(label, 0) for label, _, _ in SIZE_BUCKETS}
    allsz = np.concatenate(sizes) if sizes else np.zeros(1)
    return {
        "format": ds.source_format,
        "layout": ds.layout,
        "root": ds.root,
        "classes": list(ds.class_names),
        "splits": splits,
        "boxes_per_class": {n: per_class.get(n, 0) for n in ds.class_names} | (
            {"<unknown>": per_class["<unknown>"]} if per_class.get("<unknown>") else {}),
        "boxes_per_class_split": per_split,
        "box_size_px": {"min": float(allsz.min()), "median": float(np.median(allsz)), "max": float(allsz.max())},
        "box_size_coco": buckets,
        "image_sizes": dict(img_sizes.most_common(5)),
    }


def training_warnings(ds: Dataset, image_size: int | None = None) -> list[str]:
    """One-line warnings for a dataset that loads well but would train badly.

    * a class with fewer than 10 boxes in all;
    * a split with no boxes of some class (that class is never trained on / never evaluated);
    * images more than 4x smaller than the model input (their objects get upscaled blur).

    Args:
        ds: a (checked) dataset.
        image_size: the model's square input side in px; the size check is skipped when None.
    """
    out = []
    st = dataset_stats(ds)
    few = [(n, c) for n, c in st["boxes_per_class"].items() if c < FEW_BOXES and n != "<unknown>"]
    if few:
        listed = ", ".join(f"{n!r} ({c})" for n, c in few[:8]) + (" ..." if len(few) > 8 else "")
        out.append(f"{len(few)} class{'es have' if len(few) != 1 else ' has'} fewer than {FEW_BOXES} boxes: {listed}")
    for split, counts in st["boxes_per_class_split"].items():
        missing = [n for n, c in counts.items() if c == 0]
        if missing and st["splits"][split]["images"]:
            listed = ", ".join(repr(n) for n in missing[:8]) + (" ..." if len(missing) > 8 else "")
            out.append(f"split {split!r} has no boxes of {len(missing)} of {len(counts)} classes: {listed}")
    if image_size:
        small = [s for s in ds.samples() if max(s.width, s.height) * SMALL_IMAGE_FACTOR < image_size]
        if small:
            tiny = min(small, key=lambda s: s.width * s.height)
            out.append(f"{len(small)} image{'s are' if len(small) != 1 else ' is'} more than {SMALL_IMAGE_FACTOR}x "
                       f"smaller than the {image_size} px "
                       f"model input (smallest {tiny.width}x{tiny.height}: {os.path.basename(tiny.image_path)})")
    return out


def plot_stats(ds: Dataset, out: str | os.PathLike, *, samples: int = 8, thumb: int = 256, dpi: int = 90) -> str:
    """Write a PNG to check before training: counts per class and split, COCO box sizes, sample images.

    Top row: images per split, boxes per class and split, the small/medium/large box-size
    histogram per split. Below: ``samples`` images (spread evenly over the splits, the same ones
    every time) with their boxes and labels drawn, shown as the model sees them (EXIF
    orientation and colour conversion of :func:`edgedet.runtime.preprocess.load_image`).

    Returns:
        The path written (atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    st = dataset_stats(ds)
    picks = _pick_samples(ds, samples)
    ncols = 4
    nrows = 1 + (len(picks) + ncols - 1) // ncols
    fig = Figure(figsize=(16, 4 * nrows))
    grid = fig.add_gridspec(nrows, ncols)
    splits = list(st["splits"])
    colors = {k: c for k, c in zip(splits, ("#4c72b0", "#dd8452", "#55a868", "#c44e52"))}

    ax = fig.add_subplot(grid[0, 0])
    ax.bar(splits, [st["splits"][k]["images"] for k in splits], color=[colors[k] for k in splits])
    ax.set_title("images per split")
    ax = fig.add_subplot(grid[0, 1:3])
    x = np.arange(len(ds.class_names))
    width = 0.8 / max(1, len(splits))
    for i, k in enumerate(splits):
        ax.bar(x + i * width, [st["boxes_per_class_split"][k][n] for n in ds.class_names], width,
               label=k, color=colors[k])
    ax.set_xticks(x + width * (len(splits) - 1) / 2, ds.class_names, rotation=30 if len(x) > 6 else 0, ha="right")
    ax.set_title("boxes per class and split")
    ax.legend()
    ax = fig.add_subplot(grid[0, 3])
    labels = [b[0] for b in SIZE_BUCKETS]
    for i, k in enumerate(splits):
        ax.bar(np.arange(3) + i * width, [st["box_size_coco"][k][b] for b in labels], width, label=k, color=colors[k])
    ax.set_xticks(np.arange(3) + width * (len(splits) - 1) / 2, ["small <32²", "medium", "large ≥96²"])
    ax.set_title("box sizes (COCO areas, px)")
    for j, (split, s) in enumerate(picks):
        ax = fig.add_subplot(grid[1 + j // ncols, j % ncols])
        ax.imshow(_draw_sample(ds, s, thumb))
        ax.set_title(f"{split}: {os.path.basename(s.image_path)}", fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{ds.root} ({ds.layout or ds.source_format}): {sum(v['images'] for v in st['splits'].values())} "
                 f"images, {sum(v['boxes'] for v in st['splits'].values())} boxes, {len(ds.class_names)} classes")
    fig.tight_layout()
    import io

    from edgedet.files import atomic_write_bytes

    out = os.fspath(out)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(out, buf.getvalue())
    return out


def _pick_samples(ds: Dataset, n: int) -> list:
    """Up to ``n`` (split, sample) pairs with boxes, spread evenly over each split's list."""
    splits = [(k, [s for s in v if s.num_boxes]) for k, v in ds.splits.items()]
    splits = [(k, v) for k, v in splits if v]
    out = []
    for i, (k, v) in enumerate(splits):
        share = n // len(splits) + (1 if i < n % len(splits) else 0)
        idx = np.unique(np.linspace(0, len(v) - 1, min(share, len(v))).round().astype(int))
        out += [(k, v[j]) for j in idx]
    return out


def _draw_sample(ds: Dataset, s, thumb: int) -> np.ndarray:
    """``(h, w, 3)`` uint8 thumbnail (longer side ``thumb``) with the sample's boxes and labels."""
    from PIL import Image, ImageDraw

    from edgedet.errors import DataError
    from edgedet.runtime.draw import color
    from edgedet.runtime.preprocess import load_image

    try:
        im = Image.fromarray(load_image(s.image_path))
    except DataError:
        im = Image.new("RGB", (max(1, s.width), max(1, s.height)), (90, 0, 0))
    scale = thumb / max(im.size)
    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BILINEAR)
    draw = ImageDraw.Draw(im)
    for box, c in zip(s.boxes.tolist(), s.classes.tolist()):
        x1, y1, x2, y2 = (v * scale for v in box)
        col = color(max(c, 0))
        draw.rectangle([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)], outline=col, width=2)
        draw.text((min(x1, x2) + 2, min(y1, y2) + 1), _class_name(ds, c), fill=col)
    return np.asarray(im)
