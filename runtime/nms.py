"""Vectorised non-maximum suppression (hard and Gaussian soft), per-class or global.

Hard NMS is exact greedy NMS computed in blocks: candidates sorted by score are taken
``_BLOCK`` at a time; one matrix drops those overlapping an already kept box, a second
(block x block) matrix plus a cheap boolean pass settles the block itself. Per-class NMS
masks the matrices with "same class", so all classes are handled in the same pass (no Python
loop over classes, no per-kept-box numpy calls).

Soft NMS is inherently sequential (each kept box rescales the rest); it loops once per kept box
and separates classes with the coordinate-offset trick (boxes shifted by ``class * span``, so
boxes of different classes never overlap), as torchvision's batched NMS does.

All functions take ``boxes (N, 4)`` xyxy, ``scores (N,)`` and return indices into them,
ordered by (final) score, descending.
"""
from __future__ import annotations

import numpy as np

# Block size of the blocked greedy pass: large enough that numpy calls are few, small enough
# that the (block x block) matrices stay in cache.
_BLOCK = 256


def _columns(b: np.ndarray):
    """Contiguous x1, y1, x2, y2 columns and areas. Pairwise ops on columns run over long inner
    loops (broadcasting an (N, N, 2) array would make numpy's inner loop 2 elements long)."""
    x1, y1, x2, y2 = (np.ascontiguousarray(b[:, k]) for k in range(4))
    area = np.maximum(x2 - x1, 0.0) * np.maximum(y2 - y1, 0.0)
    return x1, y1, x2, y2, area


def _suppress_matrix(cols, a: np.ndarray, b: np.ndarray, iou_threshold: float, classes) -> np.ndarray:
    """``(len(a), len(b))`` bool: IoU(a_i, b_j) > threshold (and same class when given)."""
    x1, y1, x2, y2, area = cols
    w = np.minimum(x2[a][:, None], x2[b][None, :])
    w -= np.maximum(x1[a][:, None], x1[b][None, :])
    h = np.minimum(y2[a][:, None], y2[b][None, :])
    h -= np.maximum(y1[a][:, None], y1[b][None, :])
    np.maximum(w, 0.0, out=w)
    np.maximum(h, 0.0, out=h)
    inter = w
    inter *= h
    union = area[a][:, None] + area[b][None, :]
    union -= inter
    np.maximum(union, 1e-9, out=union)
    union *= iou_threshold
    sup = inter > union  # inter / union > threshold, without a division
    if classes is not None:
        sup &= classes[a][:, None] == classes[b][None, :]
    return sup


def hard_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float = 0.5,
    max_detections: int = 100,
    classes: np.ndarray | None = None,
) -> np.ndarray:
    """Greedy NMS (exact), blocked and vectorised.

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
    order = np.argsort(-np.asarray(scores), kind="stable")
    cols = _columns(np.asarray(boxes, np.float32)[order])
    cls = None if classes is None else np.asarray(classes)[order]
    kept: list[int] = []
    start = 0
    while start < n:
        # Blocks no larger than the detections still wanted (plus a margin for suppressed ones):
        # with many candidates, greedy NMS usually fills max_detections from the first few
        # hundred, and the block x block matrix is the main cost.
        size = min(_BLOCK, max(32, (max_detections - len(kept)) * 5 // 4 + 16))
        cand = np.arange(start, min(n, start + size))
        start += size
        if kept:
            cand = cand[~_suppress_matrix(cols, np.asarray(kept), cand, iou_threshold, cls).any(axis=0)]
        if not cand.size:
            continue
        sup = _suppress_matrix(cols, cand, cand, iou_threshold, cls)
        # Only rows that overlap another candidate (> 1: the diagonal is always set) need the
        # greedy walk. The matrix is symmetric, so a kept row's overlaps all come later in the
        # block: walking those rows in score order and dropping what each kept one overlaps
        # leaves exactly the boxes greedy NMS keeps.
        removed = np.zeros(cand.size, bool)
        for i in np.flatnonzero(np.count_nonzero(sup, axis=1) > 1).tolist():
            if not removed[i]:
                removed |= sup[i]
                removed[i] = False
        kept += cand[~removed][: max_detections - len(kept)].tolist()
        if len(kept) >= max_detections:
            break
    return order[np.asarray(kept, np.int64)]


def _offset_boxes(boxes: np.ndarray, classes: np.ndarray | None) -> np.ndarray:
    """Shift boxes by ``class * (span + 1)`` so classes never overlap (per-class NMS)."""
    if classes is None or boxes.shape[0] == 0:
        return boxes
    # float64: with 90 classes the offsets reach ~1e5 px, where float32 would round IoUs.
    b = boxes.astype(np.float64)
    lo = float(b.min())
    span = float(b.max()) - lo + 1.0
    return (b - lo) + (classes.astype(np.float64) * span)[:, None]


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
    x1, y1, x2, y2, area = _columns(_offset_boxes(np.asarray(boxes, np.float32), classes))
    s = np.asarray(scores, np.float32).copy()
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
        w = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])
        h = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])
        inter = np.maximum(w, 0.0) * np.maximum(h, 0.0)
        iou = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        s[rest] *= np.exp(-(iou * iou) * inv_sigma).astype(np.float32)
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
