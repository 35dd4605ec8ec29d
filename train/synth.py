"""The built-in synthetic detection dataset (COCO JSON + JPEGs), deterministic per seed.

Six classes told apart by shape only (circle, square, triangle, star, ring, cross); colour and
texture (solid, stripes, checker, noise, gradient) are random, so a model cannot shortcut on
them. Objects are rotated, mildly stretched (axis ratio up to 1.56), 16-60 % of the image side
(sqrt of box area; a ~4x scale range), 2-8 per image, overlap each other by up to 30 % and sit
on varied backgrounds (gradients, colour noise, stripes, checkers) among unlabelled clutter
(lines, arcs, bars, irregular blobs, dots) with pixel noise, blur and JPEG artefacts. Boxes are
the tight box of the drawn shape, so AP at IoU 0.75-0.95 rewards precise localisation.

Difficulty was set with probes (the ``test`` model from scratch at 128 px, batch 16, SGD 0.08
warm-up + cosine over 700 steps, ~19 epochs of the default 600 training images): val AP50 0.12
for a harder first version, 0.22 (AP 0.10) for this one, 0.28 for a clutter-free solid-colour
extreme, i.e. at that budget the model and step count, not the data, are the limit.

Later probes on this version (same model, 2-core CPU) confirm it is underfitting, not
overfitting: AP50 on 100 TRAIN images equals val AP50 at every budget (0.14 vs 0.14 after 666
steps at batch 16; 0.29 vs 0.28 after 1425 steps at batch 8; 0.20 vs 0.20 after 2000 steps at
64 px with anchor scale 2), and even class-agnostic val AP50 is only ~0.32 at 64 px, so finding
the objects, not only naming them, is still being learnt. Less jitter (0.8-1.25) did not help;
batch 8 beats 16 at equal images seen; a wider backbone (width 0.5) or the deep Lite0 backbone
learnt slower per step. Anchors fit (at 128 px 90 % of boxes have an IoU >= 0.5 anchor). A
step costs ~0.02 s per 128 px image (compute-bound, linear in the batch), so the 5-minute
budget gets ~1350 steps at batch 8 and test AP50 0.28 from scratch. What reaches the target is a
pretrained backbone: the ``tiny`` row (frozen ImageNet Lite0 backbone at 128 px, narrow BiFPN and
heads) gets test AP50 0.86 / 0.92 (AP 0.56 / 0.60, seeds 0 / 1) in the same 5 minutes
(``benchmarks/bench_train_synth.py``), and the quick pipeline's Lite0 at 256 px (8 epochs, backbone
frozen) reaches AP 0.56 / AP50 0.81, so AP at IoU 0.5-0.95 still separates models.

Every image has its own random stream, ``default_rng([seed, split, index])``, so the same seed
gives byte-identical files and growing ``num_images`` keeps the earlier images unchanged.

Layout written::

    OUT/annotations/instances_{train,val,test}.json
    OUT/{train,val,test}/000000.jpg ...
    OUT/synth.json            parameters, class names, counts (used to reuse a cached copy)
"""
from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np

from edgedet.errors import DataError
from edgedet.files import install
from edgedet.train.synth_draw import background, clutter, erode, mask, shape_polys, texture, transform

VERSION = 1
CLASSES = ("circle", "square", "triangle", "star", "ring", "cross")
DEFAULT_NUM_IMAGES = 800
SPLIT_FRACTIONS = (("train", 0.75), ("val", 0.125), ("test", 0.125))
MIN_SIZE, MAX_SIZE = 0.16, 0.60  # sqrt(box area) as a fraction of the image side
MIN_OBJECTS, MAX_OBJECTS = 2, 8  # placement attempts per image
MAX_OVERLAP = 0.30  # intersection / smaller box area between any two objects


# ----------------------------------------------------------------------------- one image
def render_image(rng, s: int, shapes: tuple[str, ...] = CLASSES):
    """Render one image.

    Args:
        rng: a ``numpy.random.Generator`` (the image's own stream).
        s: image side in pixels.
        shapes: the classes to draw from (names in :data:`CLASSES`); returned class ids index it.

    Returns:
        ``(image uint8 (s, s, 3), boxes float32 (N, 4) xyxy px, classes int32 (N,))``.
    """
    img = background(rng, s)
    img = clutter(rng, img, int(rng.integers(1, 8)))
    boxes, classes = [], []
    # Several placement attempts per image: more boxes per step is more signal per unit of
    # training compute; crowded images simply place fewer of the large ones.
    for _ in range(int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))):
        c = int(rng.integers(len(shapes)))
        size = s * np.exp(rng.uniform(np.log(MIN_SIZE), np.log(MAX_SIZE)))
        polys, wh = transform(shape_polys(shapes[c], rng), rng, size)
        if wh.max() >= s - 2:
            continue
        placed = None
        for _try in range(15):
            x0, y0 = rng.uniform(0, s - wh[0] - 1), rng.uniform(0, s - wh[1] - 1)
            cand = np.array([x0, y0, x0 + wh[0], y0 + wh[1]])
            if all(_overlap(cand, b) <= MAX_OVERLAP for b in boxes):
                placed = cand
                break
        if placed is None:
            continue
        ix, iy = int(placed[0]), int(placed[1])
        fx, fy = placed[0] - ix, placed[1] - iy
        m = mask([(p + [fx, fy], f) for p, f in polys], wh + [fx, fy])
        m = m[: s - iy, : s - ix]  # the +1 px margin of the mask can pass the border
        h, w = m.shape
        tex = texture(rng, h, w, side=s)
        region = img[iy:iy + h, ix:ix + w]
        # (means over a 1/4-subsampled grid: numpy's strided per-channel mean is slow)
        contrast = np.abs(tex[::4, ::4].reshape(-1, 3).mean(0) - region[::4, ::4].reshape(-1, 3).mean(0)).sum()
        if contrast < 0.35 or rng.random() < 0.25:
            # Low contrast with what is behind it: outline the shape so it stays visible.
            edge = np.clip(m - erode(erode(m)), 0, 1)[..., None]
            ink = 1.0 if tex[::4, ::4].mean() < 0.5 else 0.0  # white outline on dark fills, black on light
            tex = tex * (1 - edge) + ink * edge
        a = m[..., None]
        img[iy:iy + h, ix:ix + w] = region * (1 - a) + tex * a
        ys, xs = np.nonzero(m >= 0.5)
        if len(xs) == 0:
            continue
        boxes.append(np.array([ix + xs.min(), iy + ys.min(), ix + xs.max() + 1, iy + ys.max() + 1], np.float32))
        classes.append(c)
    if rng.random() < 0.35:
        img = clutter(rng, img, int(rng.integers(1, 3)))  # some clutter crosses the objects
    img = img * rng.uniform(0.8, 1.2) + rng.uniform(-0.1, 0.1)  # contrast / brightness
    # uniform pixel noise (std up to 0.05): 3x cheaper to draw than Gaussian, looks the same
    img = img + (rng.random(img.shape, dtype=np.float32) - 0.5) * np.float32(rng.uniform(0.0, 0.05) * 12 ** 0.5)
    out = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    if rng.random() < 0.25:
        from PIL import Image, ImageFilter

        out = np.asarray(Image.fromarray(out).filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.2))))
    return out, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int32)


def _overlap(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return ix * iy / max(small, 1e-6)


# ----------------------------------------------------------------------------- writer
def split_counts(num_images: int) -> dict[str, int]:
    """Images per split: 75 / 12.5 / 12.5 %, at least one each (800 -> 600/100/100)."""
    if num_images < 3:
        raise DataError(f"--num-images {num_images}: need at least 3 (one per split)")
    val = max(1, int(round(num_images * SPLIT_FRACTIONS[1][1])))
    test = max(1, int(round(num_images * SPLIT_FRACTIONS[2][1])))
    return {"train": num_images - val - test, "val": val, "test": test}


def _render_job(job) -> tuple[bytes, list, list]:
    """``(seed, split_idx, i, size, quality, names)`` -> (JPEG bytes, boxes, classes); top-level so it pickles."""
    from PIL import Image

    seed, split_idx, i, size, quality, names = job
    img, boxes, classes = render_image(np.random.default_rng([seed, split_idx, i]), size, names)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality)
    return buf.getvalue(), boxes.tolist(), classes.tolist()


def _check_request(out: Path, image_size: int, overwrite: bool, classes) -> tuple[str, ...]:
    """The class names to draw; a DataError for a bad size, an occupied ``out`` or unknown names."""
    if image_size < 64:
        raise DataError(f"--image-size {image_size}: must be at least 64")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DataError(f"{out}: already exists and is not empty (use --overwrite)")
    names = tuple(classes) if classes else CLASSES
    unknown = [n for n in names if n not in CLASSES]
    if unknown or len(set(names)) != len(names):
        raise DataError(f"--classes {','.join(names)}: choose distinct names from {', '.join(CLASSES)}")
    return names


def _spawn_pool(workers: int):
    """A "spawn" process pool (safe inside a TensorFlow process) for ``workers`` > 1, else None."""
    if workers <= 1:
        return None
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def write_synth(out, num_images: int = DEFAULT_NUM_IMAGES, image_size: int = 256, seed: int = 0,
                overwrite: bool = False, progress: bool = False, quality: int = 90, workers: int = 1,
                classes: tuple[str, ...] | None = None) -> dict:
    """Write the synthetic dataset to ``out`` atomically (built next to it, then renamed).

    Args:
        out: output folder; must not exist unless ``overwrite``.
        num_images: total over train/val/test (see :func:`split_counts`).
        image_size: square side in pixels (>= 64).
        seed: random seed; the same seed gives byte-identical files.
        overwrite: replace an existing ``out``.
        progress: tqdm bar.
        quality: JPEG quality.
        workers: processes ("spawn", safe inside a TensorFlow process); the output does not
            depend on it.
        classes: a subset of :data:`CLASSES` (e.g. one class); None: all six. The same
            seed with all six gives the same bytes as without the option.

    Returns:
        The ``synth.json`` content (parameters, classes, per-split image and box counts).
    """
    out = Path(out)
    names = _check_request(out, image_size, overwrite, classes)
    counts = split_counts(num_images)
    params = {"version": VERSION, "num_images": num_images, "image_size": image_size, "seed": seed, "quality": quality}
    if names != CLASSES:
        params["classes"] = list(names)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    cats = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(names)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=num_images, desc="synth", unit="img", leave=False)
    info = {**params, "classes": list(names), "splits": {}}
    image_id = ann_id = 0
    pool = _spawn_pool(workers)
    try:
        (tmp / "annotations").mkdir(parents=True)
        for split_idx, (split, n) in enumerate(counts.items()):
            (tmp / split).mkdir()
            images, anns = [], []
            jobs = [(seed, split_idx, i, image_size, quality, names) for i in range(n)]
            results = pool.map(_render_job, jobs, chunksize=8) if pool else map(_render_job, jobs)
            for i, (jpg, boxes, classes) in enumerate(results):
                image_id += 1
                name = f"{i:06d}.jpg"
                (tmp / split / name).write_bytes(jpg)
                images.append({"id": image_id, "file_name": name, "width": image_size, "height": image_size})
                for b, c in zip(boxes, classes):
                    ann_id += 1
                    w, h = b[2] - b[0], b[3] - b[1]
                    anns.append({"id": ann_id, "image_id": image_id, "category_id": c + 1,
                                 "bbox": [round(b[0], 2), round(b[1], 2), round(w, 2), round(h, 2)],
                                 "area": round(w * h, 2), "iscrowd": 0})
                if bar is not None:
                    bar.update(1)
            coco = {"info": {"description": "edgedet synthetic shapes", **params, "split": split},
                    "licenses": [], "images": images, "annotations": anns, "categories": cats}
            (tmp / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco), encoding="utf-8")
            info["splits"][split] = {"images": n, "boxes": len(anns)}
        (tmp / "synth.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
        install(tmp, out)
    finally:
        if pool is not None:
            pool.shutdown()
        if bar is not None:
            bar.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return info


def ensure_synth(out, num_images: int = DEFAULT_NUM_IMAGES, image_size: int = 256, seed: int = 0,
                 progress: bool = False) -> Path:
    """Return ``out`` holding the synthetic dataset with these parameters, writing it if needed.

    A folder with a matching ``synth.json`` is reused; a folder with another synth version or
    parameters is rewritten; any other non-empty folder is left alone (DataError).
    """
    out = Path(out)
    meta = out / "synth.json"
    want = {"version": VERSION, "num_images": num_images, "image_size": image_size, "seed": seed}
    if meta.is_file():
        try:
            have = json.loads(meta.read_text(encoding="utf-8"))
        except ValueError:
            have = {}
        if all(have.get(k) == v for k, v in want.items()):
            return out
        write_synth(out, num_images, image_size, seed, overwrite=True, progress=progress)
        return out
    write_synth(out, num_images, image_size, seed, overwrite=False, progress=progress)
    return out
