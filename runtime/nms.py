"""Vectorised non-maximum suppression (hard and Gaussian soft), per-class or global.

Per-class NMS runs as ONE global pass: every box is shifted by ``class_id * offset`` (offset
larger than any coordinate), so boxes of different classes can never overlap. This is the
"batched NMS" trick torchvision uses; it keeps the inner loop a handful of numpy calls per
kept box instead of a Python loop over classes.

All functions take ``boxes (N, 4)`` xyxy, ``scores (N,)`` and return indices into them,
ordered by (final) score, descending.
"""
from __future__ import annotations

import numpy as np


def _area(b: np.ndarray) -> np.ndarray:
    return np.maximum(b[:, 2] - b[:, 0], 0.0) * np.maximum(b[:, 3] - b[:, 1], 0.0)


def _iou_one(box: np.ndarray, area: float, others: np.ndarray, others_area: np.ndarray) -> np.ndarray:
    """IoU of one ``(4,)`` box against ``(M, 4)`` boxes -> ``(M,)``."""
    w = np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0])
    h = np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1])
    inter = np.maximum(w, 0.0) * np.maximum(h, 0.0)
    return inter / np.maximum(area + others_area - inter, 1e-9)


def _offset_boxes(boxes: np.ndarray, classes: np.ndarray | None) -> np.ndarray:
    """Shift boxes by ``class * (span + 1)`` so classes never overlap (per-class NMS)."""
    if classes is None or boxes.shape[0] == 0:
        return boxes
    # float64: with 90 classes the offsets reach ~1e5 px, where float32 would round IoUs.
    b = boxes.astype(np.float64)
    lo = float(b.min())
    span = float(b.max()) - lo + 1.0
    return (b - lo) + (classes.astype(np.float64) * span)[:, None]


def hard_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float = 0.5,
    max_detections: int = 100,
    classes: np.ndarray | None = None,
) -> np.ndarray:
    """Greedy NMS.

    Args:
        boxes: ``(N, 4)`` xyxy.
        scores: ``(N,)``; any monotone score works (raw logits too).
        iou_threshold: a box is dropped when its IoU with a kept box is ``> iou_threshold``.
        max_detections: stop after this many kept boxes.
        classes: ``(N,)`` int class ids for per-class NMS; ``None`` = global (class-agnostic).

    Returns:
        ``(K,)`` int64 indices into ``boxes``, K <= max_detections, by score descending.
    """
    n = boxes.shape[0]
    if n == 0 or max_detections <= 0:
        return np.zeros((0,), np.int64)
    b = _offset_boxes(np.asarray(boxes, np.float32), classes)
    order = np.argsort(-np.asarray(scores), kind="stable")
    b = b[order]
    area = _area(b)
    keep = []
    # `alive` holds positions (into the sorted arrays) still in play, always in score order.
    alive = np.arange(n)
    while alive.size and len(keep) < max_detections:
        i = alive[0]
        keep.append(i)
        rest = alive[1:]
        if not rest.size:
            break
        iou = _iou_one(b[i], area[i], b[rest], area[rest])
        alive = rest[iou <= iou_threshold]
    return order[np.asarray(keep, np.int64)]


def soft_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    sigma: float = 0.5,
    score_threshold: float = 0.001,
    max_detections: int = 100,
    classes: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian soft-NMS (Bodla et al. 2017): overlapping scores decay by ``exp(-iou^2 / sigma)``.

    Args:
        boxes: ``(N, 4)`` xyxy.
        scores: ``(N,)`` probabilities in [0, 1] (the decay is multiplicative).
        sigma: Gaussian width; smaller suppresses harder.
        score_threshold: boxes whose decayed score falls below this are dropped.
        max_detections: stop after this many kept boxes.
        classes: ``(N,)`` class ids for per-class NMS; ``None`` = global.

    Returns:
        ``(indices (K,) int64, new_scores (K,) float32)``, by new score descending.
    """
    n = boxes.shape[0]
    if n == 0 or max_detections <= 0:
        return np.zeros((0,), np.int64), np.zeros((0,), np.float32)
    b = _offset_boxes(np.asarray(boxes, np.float32), classes)
    s = np.asarray(scores, np.float32).copy()
    area = _area(b)
    alive = np.flatnonzero(s >= score_threshold)
    keep, kept_scores = [], []
    inv_sigma = 1.0 / max(float(sigma), 1e-9)
    while alive.size and len(keep) < max_detections:
        j = int(np.argmax(s[alive]))
        i = alive[j]
        keep.append(i)
        kept_scores.append(s[i])
        rest = np.delete(alive, j)
        if not rest.size:
            break
        iou = _iou_one(b[i], area[i], b[rest], area[rest])
        s[rest] *= np.exp(-(iou * iou) * inv_sigma)
        alive = rest[s[rest] >= score_threshold]
    return np.asarray(keep, np.int64), np.asarray(kept_scores, np.float32)


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray | None = None,
    iou_threshold: float = 0.5,
    max_detections: int = 100,
    mode: str = "class",
    soft: bool = False,
    sigma: float = 0.5,
    score_threshold: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch to hard/soft NMS, per-class (``mode="class"``) or global (``mode="global"``).

    Returns:
        ``(indices (K,), scores (K,))`` — for hard NMS the scores are the inputs at those indices.
    """
    if mode not in ("class", "global"):
        raise ValueError(f"nms mode must be 'class' or 'global', got {mode!r}")
    cls = classes if mode == "class" else None
    if soft:
        return soft_nms(boxes, scores, sigma, score_threshold, max_detections, cls)
    idx = hard_nms(boxes, scores, iou_threshold, max_detections, cls)
    return idx, np.asarray(scores, np.float32)[idx]
