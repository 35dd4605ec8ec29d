"""Image loading, letterbox and normalisation — the one pre-processing every stage shares.

Geometry (same as training's tf.data pipeline and google/automl): the image is scaled so it
fits the network input with its aspect ratio kept, placed at the TOP-LEFT corner and padded
bottom/right with the mean pixel, so the normalised padding is 0. A box found on the canvas
maps back to the original image with ``box / scale``.

Resampling: one filter everywhere, Pillow's antialiased BILINEAR (a triangle as wide as two
source pixels per output pixel when downscaling), the filter training's
``tf.image.resize(..., antialias=True)`` applies. Two quicker ways to get the same pixels:

* integer downscale factors (640x480 -> 320x240, 1280x720 -> 320x180, ...) run on OpenCV when it
  is installed: the triangle is a box of the factor convolved with a short blur, so a 3-5 tap
  blur plus ``INTER_AREA``'s box average gives Pillow's result to +-1 grey level (the border
  rows and columns are Pillow's own), 5x quicker;
  other factors use Pillow. (``INTER_AREA`` alone, a box filter, is 25x quicker but sharper
  than what the network was trained on: -2.2 AP on BCCD, see docs/performance.md.)
* :func:`load_for_model` lets a JPEG decoder drop whole factors of 2 (Pillow's ``draft``:
  libjpeg's scaled inverse DCT) as long as the image stays at least twice the size it lands at,
  so the last 2x or more is still done by the training filter.

``EDGEDET_RESIZE=pillow`` turns both off (Pillow on the full image: the reference path).

Pillow, numpy and (optionally) OpenCV; all imported lazily so ``import edgedet.runtime`` stays quick.
"""
from __future__ import annotations

import os

import numpy as np

from edgedet.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_CV2: list = []  # [module or None] once looked up


def resize_backend() -> str:
    """``"opencv"`` or ``"pillow"``: what downscales arrays (``EDGEDET_RESIZE`` overrides)."""
    return "opencv" if _opencv() is not None else "pillow"


def _reference() -> bool:
    return os.environ.get("EDGEDET_RESIZE", "").strip().lower() == "pillow"


def _opencv():
    return None if _reference() else opencv()


def opencv():
    """The ``cv2`` module when OpenCV is installed, else ``None`` (looked up once)."""
    if not _CV2:
        try:
            import cv2  # noqa: PLC0415
        except ImportError:
            cv2 = None
        _CV2.append(cv2)
    return _CV2[0]


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
    return _decode(path)[0]


def _decode(path, size=None, mode: str = "letterbox") -> tuple[np.ndarray, tuple[int, int]]:
    """Decode ``path`` as RGB; with a network ``size``, a JPEG is decoded reduced by 2, 4 or 8 as
    long as it stays at least twice the size it lands at on the canvas. Returns ``(image, (H, W))``
    with the ORIGINAL size."""
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            dw, dh = displayed_size(im)
            if size is not None and im.format == "JPEG" and not _reference():
                nh, nw, _ = fit_geometry((dh, dw), size, mode)
                # draft keeps both sides >= the request; the last >= 2x is the training filter's.
                # The request is in stored orientation (EXIF rotation is applied after decoding).
                req = (2 * nw, 2 * nh) if im.size == (dw, dh) else (2 * nh, 2 * nw)
                im.draft("RGB" if im.mode == "RGB" else None, req)
            im.load()  # decode now: a truncated file fails here, not later in resize
            return np.asarray(to_rgb(im), dtype=np.uint8).copy(), (dh, dw)
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


def _factor(src: int, dst: int) -> int:
    """The integer downscale factor from ``src`` to ``dst`` pixels, or 0 when there is none."""
    return src // dst if dst and src % dst == 0 and src >= 2 * dst else 0


def _blur_kernel(f: int) -> np.ndarray:
    """Pillow's BILINEAR for an integer factor ``f`` is box(f) * box(f) (* box(2) when ``f`` is even,
    which centres it between pixels); ``INTER_AREA`` applies one box(f), this is the rest."""
    k = np.ones(f)
    if f % 2 == 0:
        k = np.convolve(k, [1.0, 1.0])
    return (k / k.sum()).astype(np.float32)


def _resize(image: np.ndarray, new_w: int, new_h: int, out: np.ndarray | None = None) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> ``(new_h, new_w, 3)`` with Pillow's antialiased BILINEAR (see module doc).

    ``out``, a C-contiguous ``(new_h, new_w, 3)`` uint8 view (the canvas rows the image lands
    on), receives the result when the OpenCV path runs, saving a copy; the return value is
    what to use either way.
    """
    ih, iw = image.shape[:2]
    if (iw, ih) == (new_w, new_h):
        return image
    fx, fy = _factor(iw, new_w), _factor(ih, new_h)
    cv2 = _opencv() if fx and fy else None
    if cv2 is None:
        return _pillow(image, new_w, new_h)
    # A BGR->RGB frame is usually a channel-reversed view: filter the contiguous BGR buffer
    # and swap the channels of the (4x smaller) result, instead of copying the whole frame.
    flipped = image.strides[2] < 0
    src = np.ascontiguousarray(image[..., ::-1] if flipped else image)
    # The float kernel rounds once (half to even). OpenCV's fixed-point GaussianBlur, 3x quicker
    # for 2x, rounds halves up and so differs by one grey level on 1/32 of the pixels, which
    # moved BCCD AP by up to 0.15 (docs/performance.md): the pixels stay these.
    blurred = cv2.sepFilter2D(src, -1, _blur_kernel(fx), _blur_kernel(fy), borderType=cv2.BORDER_REPLICATE)
    res = cv2.resize(blurred, (new_w, new_h), dst=None if flipped else out, interpolation=cv2.INTER_AREA)
    _exact_borders(res, src, fx, fy)
    if flipped:
        res = cv2.cvtColor(res, cv2.COLOR_BGR2RGB, dst=out)
    return res


def _pillow(image: np.ndarray, new_w: int, new_h: int) -> np.ndarray:
    from PIL import Image  # noqa: PLC0415

    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((new_w, new_h), Image.BILINEAR))


def _exact_borders(out: np.ndarray, src: np.ndarray, fx: int, fy: int) -> None:
    """Redo the outermost output rows/columns with Pillow, in place. Only they reach past the
    image, where Pillow drops the missing taps and renormalises and OpenCV repeats the edge pixel.
    The first and last ``2 f`` source pixels, side by side, resized to 4 pixels, have the same
    scale and the same filter centres at both ends as the whole image: one small call per axis."""
    h, w = out.shape[:2]
    if w >= 2:
        cols = _pillow(np.concatenate([src[:, : 2 * fx], src[:, -2 * fx:]], axis=1), 4, h)
        out[:, 0], out[:, -1] = cols[:, 0], cols[:, 3]
    if h >= 2:
        rows = _pillow(np.concatenate([src[: 2 * fy], src[-2 * fy:]], axis=0), w, 4)
        out[0], out[-1] = rows[0], rows[3]


def fit_geometry(image_hw, size, mode: str = "letterbox") -> tuple[int, int, tuple[float, float]]:
    """Where an ``image_hw = (H, W)`` image lands on the ``size`` canvas.

    Returns:
        ``(new_h, new_w, (scale_y, scale_x))`` with ``input_px = original_px * scale``.
    """
    h, w = (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    ih, iw = int(image_hw[0]), int(image_hw[1])
    if mode == "stretch":
        return h, w, (h / ih, w / iw)
    scale = min(h / ih, w / iw)
    return min(h, max(1, int(round(ih * scale)))), min(w, max(1, int(round(iw * scale)))), (scale, scale)


def letterbox(image: np.ndarray, size, mean=(127.0, 127.0, 127.0), source_hw=None) -> tuple[np.ndarray, float]:
    """Aspect-preserving resize onto a ``size`` canvas, top-left, padded with the mean pixel.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        size: ``(h, w)`` of the network input (or an int for square).
        mean: pad colour in pixel units (the model's normalisation mean, so padding normalises to 0).
        source_hw: the original ``(H, W)`` when ``image`` was decoded reduced (the geometry and
            the returned scale refer to the original).

    Returns:
        ``(canvas (h, w, 3) uint8, scale)`` with ``input_px = original_px * scale``.
    """
    h, w = (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    nh, nw, (scale, _) = fit_geometry(source_hw or image.shape[:2], (h, w))
    if (nh, nw) == (h, w):
        return np.ascontiguousarray(_resize(image[..., :3], nw, nh)), float(scale)
    canvas = np.empty((h, w, 3), np.uint8)
    rows = canvas[:nh] if nw == w else None  # contiguous: the resize can write straight into it
    resized = _resize(image[..., :3], nw, nh, out=rows)
    fill = _fill(mean)
    # Fill only the padding, with a scalar when the channels agree: broadcasting a 3-vector over
    # the whole canvas is numpy's slowest case (a 3-element inner loop), 0.7 ms at 320 px.
    value = fill[0] if (fill == fill[0]).all() else fill
    canvas[nh:] = value
    canvas[:nh, nw:] = value
    if resized is not rows:
        canvas[:nh, :nw] = resized
    return canvas, float(scale)


def stretch(image: np.ndarray, size, source_hw=None) -> tuple[np.ndarray, tuple[float, float]]:
    """Resize to ``size`` ignoring aspect ratio; returns ``(canvas, (scale_y, scale_x))`` (see :func:`letterbox`)."""
    h, w, scales = fit_geometry(source_hw or image.shape[:2], size, "stretch")
    return np.ascontiguousarray(_resize(image[..., :3], w, h)), scales


def resize_for_model(image: np.ndarray, size, mode: str = "letterbox", mean=(127.0, 127.0, 127.0), source_hw=None):
    """Letterbox or stretch per the model metadata.

    Returns:
        ``(canvas (h, w, 3) uint8, (scale_y, scale_x))``.
    """
    if mode == "stretch":
        return stretch(image, size, source_hw)
    canvas, s = letterbox(image, size, mean, source_hw)
    return canvas, (s, s)


def load_for_model(path, size, mode: str = "letterbox") -> tuple[np.ndarray, tuple[int, int]]:
    """Decode an image file for a ``size`` network input, reduced in the decoder when it can be.

    Returns:
        ``(image (H', W', 3) uint8, original (H, W))``; ``H' = H`` unless a JPEG was at least
        four times the size it lands at on the canvas (it is then decoded at 1/2, 1/4 or 1/8,
        never below twice that size). Pass the original to :func:`resize_for_model` as ``source_hw``.
    """
    return _decode(path, size, mode)


def normalize(canvas: np.ndarray, mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0)) -> np.ndarray:
    """``(canvas - mean) / std`` as float32, any leading shape ``(..., 3)``."""
    m = np.asarray(mean, np.float32)
    inv = 1.0 / np.asarray(std, np.float32)
    return ((canvas.astype(np.float32) - m) * inv).astype(np.float32, copy=False)


def is_image_file(path) -> bool:
    return os.fspath(path).lower().endswith(IMAGE_SUFFIXES)
