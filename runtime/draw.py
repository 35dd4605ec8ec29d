"""Drawing detections on images (Pillow) for `edgedet detect --save` and the camera demo."""
from __future__ import annotations

import numpy as np

from edgedet.runtime.detections import Detections

_PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
]


def color(class_id: int) -> tuple[int, int, int]:
    return _PALETTE[int(class_id) % len(_PALETTE)]


def draw_detections(image: np.ndarray, dets: Detections, header: str | None = None) -> np.ndarray:
    """Draw boxes, labels and scores (and an optional header line, e.g. FPS) on a copy.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        dets: detections in this image's pixels.
        header: text drawn at the top-left on a dark band.

    Returns:
        ``(H, W, 3)`` uint8 RGB with the drawing.
    """
    from PIL import Image, ImageDraw, ImageFont  # noqa: PLC0415

    im = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default()
    width = max(1, round(min(im.size) / 200))
    for i in range(len(dets)):
        x1, y1, x2, y2 = (float(v) for v in dets.boxes[i])
        c = color(dets.classes[i])
        draw.rectangle([x1, y1, x2, y2], outline=c, width=width)
        text = f"{dets.label(i)} {dets.scores[i]:.2f}"
        l, t, r, b = draw.textbbox((0, 0), text, font=font)
        ty = y1 - (b - t) - 4 if y1 - (b - t) - 4 >= 0 else y1
        draw.rectangle([x1, ty, x1 + (r - l) + 4, ty + (b - t) + 4], fill=c)
        draw.text((x1 + 2, ty + 2 - t), text, fill=(0, 0, 0), font=font)
    if header:
        l, t, r, b = draw.textbbox((0, 0), header, font=font)
        draw.rectangle([0, 0, (r - l) + 8, (b - t) + 8], fill=(0, 0, 0))
        draw.text((4, 4 - t), header, fill=(255, 255, 255), font=font)
    return np.asarray(im)
