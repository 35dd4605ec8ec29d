"""Box coding (ty, tx, th, tw) against anchors, plus IoU.

Training encodes targets with :func:`encode`; evaluation and the on-device runtime decode
with :func:`decode`. One implementation for both means a trained model and its exported
files cannot disagree about what a box delta means. Same convention as google/automl's
FasterRcnnBoxCoder without scale factors.
"""
from __future__ import annotations

import numpy as np

# exp() of a box delta beyond this is a degenerate prediction; clipping avoids inf boxes
# from an int8 model whose dequantised deltas saturate.
_MAX_LOG_SCALE = float(np.log(1000.0 / 16))


def xyxy_to_center(boxes: np.ndarray) -> np.ndarray:
    """``(..., 4)`` xyxy -> ``(..., 4)`` (cy, cx, h, w)."""
    x1, y1, x2, y2 = np.moveaxis(boxes, -1, 0)
    return np.stack([(y1 + y2) / 2, (x1 + x2) / 2, y2 - y1, x2 - x1], axis=-1)


def encode(boxes: np.ndarray, anchor_center: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Encode boxes relative to their matched anchors.

    Args:
        boxes: ``(N, 4)`` xyxy in input pixels.
        anchor_center: ``(N, 4)`` anchors (cy, cx, h, w), row i paired with boxes[i].

    Returns:
        ``(N, 4)`` float32 deltas (ty, tx, th, tw).
    """
    b = xyxy_to_center(np.asarray(boxes, dtype=np.float32))
    a = np.asarray(anchor_center, dtype=np.float32)
    ha, wa = a[:, 2] + eps, a[:, 3] + eps
    ty = (b[:, 0] - a[:, 0]) / ha
    tx = (b[:, 1] - a[:, 1]) / wa
    th = np.log(np.maximum(b[:, 2], eps) / ha)
    tw = np.log(np.maximum(b[:, 3], eps) / wa)
    return np.stack([ty, tx, th, tw], axis=1).astype(np.float32)


def decode(deltas: np.ndarray, anchor_center: np.ndarray) -> np.ndarray:
    """Decode deltas (ty, tx, th, tw) into xyxy boxes.

    Args:
        deltas: ``(N, 4)`` float.
        anchor_center: ``(N, 4)`` anchors (cy, cx, h, w).

    Returns:
        ``(N, 4)`` float32 xyxy in input pixels.
    """
    d = np.asarray(deltas, dtype=np.float32)
    a = np.asarray(anchor_center, dtype=np.float32)
    cy = d[:, 0] * a[:, 2] + a[:, 0]
    cx = d[:, 1] * a[:, 3] + a[:, 1]
    h = np.exp(np.minimum(d[:, 2], _MAX_LOG_SCALE)) * a[:, 2]
    w = np.exp(np.minimum(d[:, 3], _MAX_LOG_SCALE)) * a[:, 3]
    out = np.empty((d.shape[0], 4), dtype=np.float32)
    out[:, 0] = cx - w / 2
    out[:, 1] = cy - h / 2
    out[:, 2] = cx + w / 2
    out[:, 3] = cy + h / 2
    return out


def box_area(boxes: np.ndarray) -> np.ndarray:
    """``(..., 4)`` xyxy -> ``(...)`` area (0 for inverted boxes)."""
    return np.clip(boxes[..., 2] - boxes[..., 0], 0, None) * np.clip(boxes[..., 3] - boxes[..., 1], 0, None)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU.

    Args:
        a: ``(N, 4)`` xyxy.
        b: ``(M, 4)`` xyxy.

    Returns:
        ``(N, M)`` float32 IoU.
    """
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return (inter / np.maximum(union, 1e-9)).astype(np.float32)
