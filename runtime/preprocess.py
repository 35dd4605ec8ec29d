"""Image loading, letterbox and normalisation — the one pre-processing every stage shares.

Geometry (same as training's tf.data pipeline and google/automl): the image is scaled so it
fits the network input with its aspect ratio kept, placed at the TOP-LEFT corner and padded
bottom/right with the mean pixel, so the normalised padding is 0. A box found on the canvas
maps back to the original image with ``box / scale``.

Pillow and numpy only; Pillow is imported lazily so ``import edgedet.runtime`` stays quick.
"""
from __future__ import annotations

import os

import numpy as np

from edgedet.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def to_rgb(im):
    """The one conversion every stage applies to a decoded Pillow image.

    EXIF orientation is applied first (``ImageOps.exif_transpose``): boxes are labelled on the
    image as displayed, which is what labelling tools show. Then any mode becomes RGB:
    grayscale is repeated over the channels, CMYK and palette images go through Pillow's
    conversion, 16/32-bit grayscale is scaled to 8 bits, and an alpha channel is dropped
    (pixels keep their colour). Training, evaluation and the runtime all call this.

    Args:
        im: a loaded ``PIL.Image``.

    Returns:
        A ``PIL.Image`` in mode "RGB".
    """
    from PIL import ImageOps  # noqa: PLC0415

    im = ImageOps.exif_transpose(im)
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or (a.size and a.max() > 255) else 255.0
        from PIL import Image  # noqa: PLC0415

        im = Image.fromarray(np.clip(a * (255.0 / top), 0, 255).astype(np.uint8), "L")
    if im.mode in ("P", "PA", "LA"):
        im = im.convert("RGBA")  # palette transparency and grey+alpha: resolve first
    return im if im.mode == "RGB" else im.convert("RGB")


def displayed_size(im) -> tuple[int, int]:
    """``(width, height)`` of an opened (not necessarily decoded) image as displayed.

    EXIF orientations 5-8 rotate by 90 degrees, so width and height swap; read from the
    header only, so it is as cheap as ``im.size``.
    """
    w, h = int(im.width), int(im.height)
    try:
        orientation = im.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block: Pillow shows the image unrotated, so do we
        orientation = 1
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def load_image(path) -> np.ndarray:
    """Read an image file as RGB, as displayed (see :func:`to_rgb`).

    Args:
        path: image file path.

    Returns:
        ``(H, W, 3)`` uint8 RGB.

    Raises:
        DataError: missing, not an image, or truncated/corrupt (the message names the file).
    """
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated file fails here, not later in resize
            return np.asarray(to_rgb(im), dtype=np.uint8).copy()
    except UnidentifiedImageError as exc:
        raise DataError(f"{path}: not an image file (Pillow cannot identify it)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: truncated or corrupt image ({exc})") from exc


def as_rgb_uint8(image) -> np.ndarray:
    """Accept a path or an array (``(H,W,3)``/``(H,W)``/``(H,W,4)``) and return ``(H, W, 3)`` uint8."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise DataError(f"image array must be (H, W, 3) RGB, got shape {a.shape}")
    if a.shape[2] == 4:
        a = a[..., :3]
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating) and a.size and float(a.max()) <= 1.0:
            a = a * 255.0  # floats in [0, 1]
        a = np.clip(a, 0, 255).astype(np.uint8)
    return a


def _fill(mean) -> np.ndarray:
    return np.clip(np.round(np.asarray(mean, np.float32).reshape(-1)), 0, 255).astype(np.uint8)


def _resize(image: np.ndarray, new_w: int, new_h: int) -> np.ndarray:
    if (image.shape[1], image.shape[0]) == (new_w, new_h):
        return image
    from PIL import Image  # noqa: PLC0415

    # Pillow's BILINEAR widens its filter when downscaling (antialiased), matching
    # tf.image.resize(..., antialias=True) used in training.
    return np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))


def letterbox(image: np.ndarray, size, mean=(127.0, 127.0, 127.0)) -> tuple[np.ndarray, float]:
    """Aspect-preserving resize onto a ``size`` canvas, top-left, padded with the mean pixel.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        size: ``(h, w)`` of the network input (or an int for square).
        mean: pad colour in pixel units (the model's normalisation mean, so padding normalises to 0).

    Returns:
        ``(canvas (h, w, 3) uint8, scale)`` with ``input_px = original_px * scale``.
    """
    h, w = (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    ih, iw = image.shape[:2]
    scale = min(h / ih, w / iw)
    nh, nw = min(h, max(1, int(round(ih * scale)))), min(w, max(1, int(round(iw * scale))))
    resized = _resize(np.ascontiguousarray(image[..., :3]), nw, nh)
    if (nh, nw) == (h, w):
        return np.ascontiguousarray(resized), float(scale)
    canvas = np.empty((h, w, 3), np.uint8)
    fill = _fill(mean)
    # Fill only the padding, with a scalar when the channels agree: broadcasting a 3-vector over
    # the whole canvas is numpy's slowest case (a 3-element inner loop), 0.7 ms at 320 px.
    value = fill[0] if (fill == fill[0]).all() else fill
    canvas[nh:] = value
    canvas[:nh, nw:] = value
    canvas[:nh, :nw] = resized
    return canvas, float(scale)


def stretch(image: np.ndarray, size) -> tuple[np.ndarray, tuple[float, float]]:
    """Resize to ``size`` ignoring aspect ratio; returns ``(canvas, (scale_y, scale_x))``."""
    h, w = (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    ih, iw = image.shape[:2]
    return np.ascontiguousarray(_resize(np.ascontiguousarray(image[..., :3]), w, h)), (h / ih, w / iw)


def resize_for_model(image: np.ndarray, size, mode: str = "letterbox", mean=(127.0, 127.0, 127.0)):
    """Letterbox or stretch per the model metadata.

    Returns:
        ``(canvas (h, w, 3) uint8, (scale_y, scale_x))``.
    """
    if mode == "stretch":
        return stretch(image, size)
    canvas, s = letterbox(image, size, mean)
    return canvas, (s, s)


def normalize(canvas: np.ndarray, mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0)) -> np.ndarray:
    """``(canvas - mean) / std`` as float32, any leading shape ``(..., 3)``."""
    m = np.asarray(mean, np.float32)
    inv = 1.0 / np.asarray(std, np.float32)
    return ((canvas.astype(np.float32) - m) * inv).astype(np.float32, copy=False)


def is_image_file(path) -> bool:
    return os.fspath(path).lower().endswith(IMAGE_SUFFIXES)
