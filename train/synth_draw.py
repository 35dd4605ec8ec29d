"""Drawing for the synthetic dataset (:mod:`edgedet.train.synth`): shape outlines, masks, textures,
backgrounds and clutter, all in float32 RGB in ``[0, 1]`` and driven by the caller's
``numpy.random.Generator`` (so an image is a pure function of its random stream).
"""
from __future__ import annotations

import numpy as np


# ----------------------------------------------------------------------------- geometry
def _circle(n=48):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([np.cos(t), np.sin(t)], 1)


def _star(rng, points=5):
    inner = rng.uniform(0.38, 0.5)
    t = np.arange(2 * points) * np.pi / points - np.pi / 2
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def shape_polys(cls: str, rng) -> list[tuple[np.ndarray, int]]:
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


def transform(polys, rng, size_px: float):
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


def mask(polys, wh, ss: int = 2):
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


def texture(rng, h, w, dull=False, period=(0.02, 0.07), side=256):
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


def background(rng, s):
    kind = rng.choice(["gradient", "radial", "noise", "texture"], p=[0.3, 0.2, 0.3, 0.2])
    if kind == "gradient":
        bg = texture(rng, s, s, dull=True, side=s) if rng.random() < 0.2 else None
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
        bg = 0.5 * texture(rng, s, s, dull=True, period=(0.025, 0.15), side=s) + 0.5 * _colour(rng, True)
    if rng.random() < 0.5:  # fine-grained texture on top, like paper or fabric
        bg = bg + (_value_noise(rng, s, s, s // 4, 1) - 0.5) * rng.uniform(0.03, 0.15)
    return bg.astype(np.float32)


# ----------------------------------------------------------------------------- clutter
def clutter(rng, img, count):
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


def erode(m):
    """3x3 min filter (for outlines) without scipy."""
    p = np.pad(m, 1, mode="constant")
    return np.min([p[dy:dy + m.shape[0], dx:dx + m.shape[1]] for dy in range(3) for dx in range(3)], axis=0)
