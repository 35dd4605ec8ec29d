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

VERSION = 1
CLASSES = ("circle", "square", "triangle", "star", "ring", "cross")
DEFAULT_NUM_IMAGES = 800
SPLIT_FRACTIONS = (("train", 0.75), ("val", 0.125), ("test", 0.125))
MIN_SIZE, MAX_SIZE = 0.16, 0.60  # sqrt(box area) as a fraction of the image side
MIN_OBJECTS, MAX_OBJECTS = 2, 8  # placement attempts per image
MAX_OVERLAP = 0.30  # intersection / smaller box area between any two objects


# ----------------------------------------------------------------------------- geometry
def _circle(n=48):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([np.cos(t), np.sin(t)], 1)


def _star(rng, points=5):
    inner = rng.uniform(0.38, 0.5)
    t = np.arange(2 * points) * np.pi / points - np.pi / 2
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _shape_polys(cls: str, rng) -> list[tuple[np.ndarray, int]]:
    """Polygons in a unit frame as ``[(points (K, 2), fill 255 or 0), ...]``, drawn in order."""
    if cls == "circle":
        return [(_circle(), 255)]
    if cls == "square":
        return [(np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float), 255)]
    if cls == "triangle":
        t = np.deg2rad([-90, 30, 150])
        return [(np.stack([np.cos(t), np.sin(t)], 1), 255)]
    if cls == "star":
        return [(_star(rng), 255)]
    if cls == "ring":
        return [(_circle(), 255), (_circle() * rng.uniform(0.45, 0.65), 0)]
    if cls == "cross":
        a = rng.uniform(0.28, 0.4)
        return [(np.array([[-a, -1], [a, -1], [a, 1], [-a, 1]], float), 255),
                (np.array([[-1, -a], [1, -a], [1, a], [-1, a]], float), 255)]
    raise ValueError(cls)


def _transform(polys, rng, size_px: float):
    """Rotate, stretch (axis ratio up to 1.25**2) and scale so sqrt(bbox area) == size_px; origin at bbox min."""
    th = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    stretch = np.exp(rng.uniform(np.log(0.8), np.log(1.25)))
    m = rot @ np.diag([stretch, 1.0 / stretch])
    pts = [(p @ m.T, f) for p, f in polys]
    allp = np.concatenate([p for p, _ in pts])
    lo, hi = allp.min(0), allp.max(0)
    scale = size_px / np.sqrt(np.prod(hi - lo))
    return [((p - lo) * scale, f) for p, f in pts], (hi - lo) * scale


def _mask(polys, wh, ss: int = 2):
    """Antialiased ``(h, w)`` float32 mask in [0, 1], drawn at ``ss``x then downsampled."""
    from PIL import Image, ImageDraw

    w, h = int(np.ceil(wh[0])) + 1, int(np.ceil(wh[1])) + 1
    im = Image.new("L", (w * ss, h * ss), 0)
    d = ImageDraw.Draw(im)
    for p, fill in polys:
        d.polygon([tuple(q) for q in (p * ss).tolist()], fill=fill)
    return np.asarray(im.resize((w, h), Image.BILINEAR if ss == 1 else Image.BOX), np.float32) / 255.0


# ----------------------------------------------------------------------------- textures
def _colour(rng, dull: bool = False):
    if dull:  # backgrounds lean grey so coloured objects still have something to stand on
        c = 0.5 * rng.uniform(0, 1, 3) + 0.5 * rng.uniform(0.2, 0.8)
    else:  # objects: a saturated hue (HSV -> RGB)
        h, sat, val = rng.uniform(0, 1), rng.uniform(0.45, 1.0), rng.uniform(0.35, 1.0)
        k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
        c = val - val * sat * np.clip(np.minimum(k, 4 - k), 0, 1)
    return np.asarray(c, np.float32)


def _value_noise(rng, h, w, cells, channels=3):
    from PIL import Image

    g = (rng.uniform(0, 1, (cells, cells, channels)) * 255).astype(np.uint8)
    mode = "RGB" if channels == 3 else "L"
    img = Image.fromarray(g if channels == 3 else g[..., 0], mode).resize((w, h), Image.BICUBIC)
    out = np.asarray(img, np.float32) / 255.0
    return out if channels == 3 else out[..., None]


def _grid(h, w):
    """Broadcastable ``(h, 1)`` and ``(1, w)`` coordinates (cheaper than a full mgrid)."""
    return np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]


def _texture(rng, h, w, dull=False, period=(0.02, 0.07), side=256):
    """A ``(h, w, 3)`` float32 fill: solid, stripes, checker, noise or gradient.

    ``period`` is the stripe/checker period range as a fraction of the image ``side``, so the
    pattern stays resolvable (>= ~2.5 px) when a 256 px image is fed to a 128 px model.
    """
    period = (period[0] * side, period[1] * side)
    kind = rng.choice(["solid", "stripes", "checker", "noise", "gradient"], p=[0.25, 0.2, 0.15, 0.2, 0.2])
    c1, c2 = _colour(rng, dull), _colour(rng, dull)
    if kind == "solid":
        return np.broadcast_to(c1, (h, w, 3)).copy()
    yy, xx = _grid(h, w)
    th = rng.uniform(0, np.pi)
    u = xx * np.float32(np.cos(th)) + yy * np.float32(np.sin(th))
    if kind == "stripes":
        t = (np.sin(u * 2 * np.pi / rng.uniform(*period)) > 0).astype(np.float32)
    elif kind == "checker":
        v = -xx * np.float32(np.sin(th)) + yy * np.float32(np.cos(th))
        p = rng.uniform(*period)
        t = ((np.floor(u / p) + np.floor(v / p)) % 2).astype(np.float32)
    elif kind == "noise":
        t = _value_noise(rng, h, w, int(rng.integers(3, 12)), 1)[..., 0]
    else:
        t = (u - u.min()) / max(float(np.ptp(u)), 1.0)
    return c1 + np.broadcast_to(t, (h, w))[..., None] * (c2 - c1)


def _background(rng, s):
    kind = rng.choice(["gradient", "radial", "noise", "texture"], p=[0.3, 0.2, 0.3, 0.2])
    if kind == "gradient":
        bg = _texture(rng, s, s, dull=True, side=s) if rng.random() < 0.2 else None
        if bg is None:
            yy, xx = _grid(s, s)
            th = rng.uniform(0, 2 * np.pi)
            u = xx * np.float32(np.cos(th)) + yy * np.float32(np.sin(th))
            u = (u - u.min()) / max(float(np.ptp(u)), 1.0)
            c1, c2 = _colour(rng, True), _colour(rng, True)
            bg = c1 + u[..., None] * (c2 - c1)
    elif kind == "radial":
        yy, xx = _grid(s, s)
        cy, cx = rng.uniform(0, s, 2)
        r = np.sqrt((yy - np.float32(cy)) ** 2 + (xx - np.float32(cx)) ** 2) / s
        c1, c2 = _colour(rng, True), _colour(rng, True)
        bg = c1 + np.clip(r, 0, 1)[..., None] * (c2 - c1)
    elif kind == "noise":
        bg = 0.3 + 0.4 * _value_noise(rng, s, s, int(rng.integers(3, 10)))
    else:
        bg = 0.5 * _texture(rng, s, s, dull=True, period=(0.025, 0.15), side=s) + 0.5 * _colour(rng, True)
    if rng.random() < 0.5:  # fine-grained texture on top, like paper or fabric
        bg = bg + (_value_noise(rng, s, s, s // 4, 1) - 0.5) * rng.uniform(0.03, 0.15)
    return bg.astype(np.float32)


# ----------------------------------------------------------------------------- clutter
def _clutter(rng, img, count):
    """Unlabelled distractors: lines, arcs, thin bars, irregular blobs, dots."""
    from PIL import Image, ImageDraw

    s = img.shape[0]
    layer = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    for _ in range(count):
        col = tuple(int(v) for v in rng.integers(0, 256, 3)) + (int(rng.integers(120, 256)),)
        kind = rng.choice(["line", "arc", "bar", "blob", "dots"], p=[0.3, 0.2, 0.15, 0.2, 0.15])
        if kind == "line":
            pts = rng.uniform(-0.1 * s, 1.1 * s, (int(rng.integers(2, 4)), 2))
            d.line([tuple(p) for p in pts.tolist()], fill=col, width=int(rng.integers(1, max(2, s // 64) + 1)))
        elif kind == "arc":
            c, r = rng.uniform(0, s, 2), rng.uniform(0.05, 0.3) * s
            a0 = rng.uniform(0, 360)
            d.arc([c[0] - r, c[1] - r, c[0] + r, c[1] + r], a0, a0 + rng.uniform(40, 200), fill=col,
                  width=int(rng.integers(1, max(2, s // 64) + 1)))
        elif kind == "bar":  # thin and long: never square-like
            L, t = rng.uniform(0.15, 0.5) * s, rng.uniform(0.015, 0.035) * s
            th = rng.uniform(0, np.pi)
            c = rng.uniform(0, s, 2)
            u, v = np.array([np.cos(th), np.sin(th)]) * L / 2, np.array([-np.sin(th), np.cos(th)]) * t / 2
            d.polygon([tuple(c + a * u + b * v) for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1))], fill=col)
        elif kind == "blob":  # irregular polygon, smaller than the smallest object
            k = int(rng.integers(6, 11))
            t = np.sort(rng.uniform(0, 2 * np.pi, k))
            r = rng.uniform(0.4, 1.0, k) * rng.uniform(0.03, 0.09) * s
            c = rng.uniform(0, s, 2)
            d.polygon([tuple(p) for p in (c + np.stack([r * np.cos(t), r * np.sin(t)], 1)).tolist()], fill=col)
        else:
            for p in rng.uniform(0, s, (int(rng.integers(3, 15)), 2)).tolist():
                r = rng.uniform(0.5, 0.012 * s + 1)
                d.ellipse([p[0] - r, p[1] - r, p[0] + r, p[1] + r], fill=col)
    base = Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)).convert("RGBA")
    return np.asarray(Image.alpha_composite(base, layer).convert("RGB"), np.float32) / 255.0


# ----------------------------------------------------------------------------- one image
def render_image(rng, s: int):
    """Render one image.

    Args:
        rng: a ``numpy.random.Generator`` (the image's own stream).
        s: image side in pixels.

    Returns:
        ``(image uint8 (s, s, 3), boxes float32 (N, 4) xyxy px, classes int32 (N,))``.
    """
    img = _background(rng, s)
    img = _clutter(rng, img, int(rng.integers(1, 8)))
    boxes, classes = [], []
    # Several placement attempts per image: more boxes per step is more signal per unit of
    # training compute; crowded images simply place fewer of the large ones.
    for _ in range(int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))):
        c = int(rng.integers(len(CLASSES)))
        size = s * np.exp(rng.uniform(np.log(MIN_SIZE), np.log(MAX_SIZE)))
        polys, wh = _transform(_shape_polys(CLASSES[c], rng), rng, size)
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
        m = _mask([(p + [fx, fy], f) for p, f in polys], wh + [fx, fy])
        m = m[: s - iy, : s - ix]  # the +1 px margin of the mask can pass the border
        h, w = m.shape
        tex = _texture(rng, h, w, side=s)
        region = img[iy:iy + h, ix:ix + w]
        # (means over a 1/4-subsampled grid: numpy's strided per-channel mean is slow)
        contrast = np.abs(tex[::4, ::4].reshape(-1, 3).mean(0) - region[::4, ::4].reshape(-1, 3).mean(0)).sum()
        if contrast < 0.35 or rng.random() < 0.25:
            # Low contrast with what is behind it: outline the shape so it stays visible.
            edge = np.clip(m - _erode(_erode(m)), 0, 1)[..., None]
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
        img = _clutter(rng, img, int(rng.integers(1, 3)))  # some clutter crosses the objects
    img = img * rng.uniform(0.8, 1.2) + rng.uniform(-0.1, 0.1)  # contrast / brightness
    # uniform pixel noise (std up to 0.05): 3x cheaper to draw than Gaussian, looks the same
    img = img + (rng.random(img.shape, dtype=np.float32) - 0.5) * np.float32(rng.uniform(0.0, 0.05) * 12 ** 0.5)
    out = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    if rng.random() < 0.25:
        from PIL import Image, ImageFilter

        out = np.asarray(Image.fromarray(out).filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.2))))
    return out, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int32)


def _erode(m):
    """3x3 min filter (for outlines) without scipy."""
    p = np.pad(m, 1, mode="constant")
    return np.min([p[dy:dy + m.shape[0], dx:dx + m.shape[1]] for dy in range(3) for dx in range(3)], axis=0)


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
    """``(seed, split_idx, i, size, quality)`` -> (JPEG bytes, boxes, classes); top-level so it pickles."""
    from PIL import Image

    seed, split_idx, i, size, quality = job
    img, boxes, classes = render_image(np.random.default_rng([seed, split_idx, i]), size)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality)
    return buf.getvalue(), boxes.tolist(), classes.tolist()


def write_synth(out, num_images: int = DEFAULT_NUM_IMAGES, image_size: int = 256, seed: int = 0,
                overwrite: bool = False, progress: bool = False, quality: int = 90, workers: int = 1) -> dict:
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

    Returns:
        The ``synth.json`` content (parameters, classes, per-split image and box counts).
    """
    out = Path(out)
    if image_size < 64:
        raise DataError(f"--image-size {image_size}: must be at least 64")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DataError(f"{out}: already exists and is not empty (use --overwrite)")
    counts = split_counts(num_images)
    params = {"version": VERSION, "num_images": num_images, "image_size": image_size, "seed": seed, "quality": quality}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    cats = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASSES)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=num_images, desc="synth", unit="img", leave=False)
    info = {**params, "classes": list(CLASSES), "splits": {}}
    image_id = ann_id = 0
    pool = None
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        (tmp / "annotations").mkdir(parents=True)
        for split_idx, (split, n) in enumerate(counts.items()):
            (tmp / split).mkdir()
            images, anns = [], []
            jobs = [(seed, split_idx, i, image_size, quality) for i in range(n)]
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
