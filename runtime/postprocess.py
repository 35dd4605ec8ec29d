"""Raw EfficientDet outputs -> :class:`Detections`.

Order of work, chosen so the expensive part touches as few values as possible:

1. threshold the class LOGITS (``logit = log(p / (1 - p))``) — no sigmoid over 1.7M values;
   int8/uint8 outputs are compared as quantised integers, never dequantised in bulk;
2. top-k of the survivors (``pre_nms_topk``);
3. dequantise + decode only those boxes with :func:`edgedet.runtime.boxes.decode`;
4. sigmoid of the survivors' logits, then vectorised NMS (:mod:`edgedet.runtime.nms`).

Per-level outputs are thresholded level by level (no concatenation), using the anchor order
of :mod:`edgedet.runtime.anchors`: ``(H, W, A*C)`` reshaped to ``(H*W*A, C)``.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from edgedet.runtime.boxes import decode
from edgedet.runtime.detections import Detections
from edgedet.runtime.nms import nms as _nms
from edgedet.runtime.preprocess import opencv

Quant = "tuple[float, int] | None"  # (scale, zero_point) of a quantised output tensor


def score_to_logit(p: float) -> float:
    """``log(p / (1 - p))``; ``-inf`` for p <= 0 and ``+inf`` for p >= 1."""
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return math.inf
    return math.log(p / (1.0 - p))


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _dequant(values: np.ndarray, quant) -> np.ndarray:
    if quant is None or not np.issubdtype(values.dtype, np.integer):
        return values.astype(np.float32, copy=False)
    scale, zp = quant
    return (values.astype(np.float32) - np.float32(zp)) * np.float32(scale)


def _at_least(values: np.ndarray, bound, strict: bool) -> np.ndarray:
    """Flat indices (row-major) where ``values > bound`` (``strict``) or ``values >= bound``.

    Args:
        values: ``(N, K)`` array; ``bound`` is representable in its dtype.

    With OpenCV installed, its comparison and ``findNonZero`` do the pass over the 1.3 M-entry
    P3 logits (a few hundred hits) in about half numpy's time: this pass is the only
    post-processing work that grows with the anchors.
    """
    cv2 = opencv()
    if cv2 is None or values.size < 65536 or values.ndim != 2 or values.shape[1] >= 2**31 \
            or not values.flags.c_contiguous:
        return np.flatnonzero(values > bound if strict else values >= bound)
    mask = cv2.compare(values, float(bound), cv2.CMP_GT if strict else cv2.CMP_GE)
    pts = cv2.findNonZero(mask)
    if pts is None:
        return np.zeros((0,), np.int64)
    pts = pts.reshape(-1, 2)
    return pts[:, 1].astype(np.int64) * values.shape[1] + pts[:, 0]


def _above(values: np.ndarray, logit_thr: float, quant) -> np.ndarray:
    """Flat indices where ``value > logit_thr`` (comparing quantised ints when quantised).

    Args:
        values: ``(N, K)`` (any 2-D view of one level's class logits).
    """
    if np.issubdtype(values.dtype, np.integer):
        scale, zp = quant if quant is not None else (1.0, 0)
        info = np.iinfo(values.dtype)
        if logit_thr == -math.inf:
            return np.arange(values.size)
        if logit_thr == math.inf:
            return np.zeros((0,), np.int64)
        # (q - zp) * scale > t  <=>  q > t / scale + zp  <=>  q >= floor(t / scale + zp) + 1
        q_min = math.floor(logit_thr / scale + zp) + 1
        if q_min > info.max:
            return np.zeros((0,), np.int64)
        if q_min <= info.min:
            return np.arange(values.size)
        return _at_least(values, int(q_min), strict=False)
    if values.dtype != np.float32:
        return np.flatnonzero(values > np.float32(logit_thr))
    return _at_least(values, float(np.float32(logit_thr)), strict=True)


def postprocess(
    class_outputs,
    box_outputs,
    anchors,
    score_threshold: float = 0.3,
    iou_threshold: float = 0.5,
    max_detections: int = 100,
    nms: str = "class",
    soft: bool = False,
    sigma: float = 0.5,
    pre_nms_topk: int = 5000,
    class_quant: Sequence | None = None,
    box_quant: Sequence | None = None,
    labels: Sequence[str] = (),
) -> Detections:
    """Decode one image's raw outputs into detections in INPUT-pixel coordinates.

    Args:
        class_outputs: list per level of ``(H, W, A*C)`` (or ``(1, H, W, A*C)``, or already
            flattened ``(H*W*A, C)``) class logits; a single ``(N, C)`` array also works.
            float or int8/uint8 (then give ``class_quant``).
        box_outputs: same layout with 4 deltas ``(ty, tx, th, tw)`` per anchor.
        anchors: :class:`~edgedet.runtime.anchors.Anchors` or ``(N, 4)`` (cy, cx, h, w).
        score_threshold: keep (anchor, class) pairs with sigmoid score ``> score_threshold``.
        iou_threshold: NMS IoU threshold (hard NMS).
        max_detections: detections returned at most.
        nms: "class" (per-class) or "global" (class-agnostic).
        soft: Gaussian soft-NMS instead of hard NMS.
        sigma: soft-NMS Gaussian width.
        pre_nms_topk: candidates kept (by score) before decoding and NMS.
        class_quant, box_quant: per level ``(scale, zero_point)`` (or one pair for all), for
            quantised outputs; ``None`` for float outputs.
        labels: class names for the result.

    Returns:
        :class:`Detections` with boxes ``(K, 4)`` xyxy in network-input pixels (not clipped),
        scores by descending order. Use :func:`to_original` to map to the source image.
    """
    centers = getattr(anchors, "center", anchors)
    n_anchors = int(centers.shape[0])
    cls_levels = _as_list(class_outputs)
    box_levels = _as_list(box_outputs)
    total = sum(int(np.size(c)) for c in cls_levels)
    if n_anchors == 0 or total % n_anchors:
        raise ValueError(f"class outputs hold {total} values, not a multiple of {n_anchors} anchors")
    num_classes = total // n_anchors
    cq = _per_level(class_quant, len(cls_levels))
    bq = _per_level(box_quant, len(box_levels))
    logit_thr = score_to_logit(float(score_threshold))

    # 1. threshold per level on raw (possibly quantised) logits
    flat_idx, logits = [], []
    offset = 0
    for lv, arr in enumerate(cls_levels):
        arr = np.asarray(arr)
        hit = _above(arr.reshape(-1, arr.shape[-1]) if arr.ndim > 1 else arr.reshape(1, -1), logit_thr, cq[lv])
        if hit.size:
            flat_idx.append(hit + offset)
            logits.append(_dequant(arr.reshape(-1)[hit], cq[lv]))
        offset += arr.size
    if not flat_idx:
        return Detections.empty(labels)
    flat_idx = np.concatenate(flat_idx)
    logits = np.concatenate(logits)

    # 2. top-k
    if logits.size > pre_nms_topk > 0:
        top = np.argpartition(-logits, pre_nms_topk - 1)[:pre_nms_topk]
        flat_idx, logits = flat_idx[top], logits[top]
    anchor_idx = flat_idx // num_classes
    classes = (flat_idx - anchor_idx * num_classes).astype(np.int32)

    # 3. dequantise + decode only the survivors' boxes
    deltas = _gather_boxes(box_levels, bq, anchor_idx, n_anchors)
    boxes = decode(deltas, centers[anchor_idx])

    # 4. NMS; hard NMS ranks by logit (sigmoid saturates near 1, where float noise would
    #    reorder near-ties), soft NMS decays probabilities.
    if soft:
        scores = _sigmoid(logits)
        keep, kept_scores = _nms(boxes, scores, classes, iou_threshold, max_detections, mode=nms, soft=True,
                                 sigma=sigma, score_threshold=max(float(score_threshold), 1e-6))
    else:
        keep, _ = _nms(boxes, logits, classes, iou_threshold, max_detections, mode=nms)
        kept_scores = _sigmoid(logits[keep])
    return Detections(boxes[keep], kept_scores, classes[keep], tuple(labels))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x.astype(np.float32)))).astype(np.float32)


def _per_level(quant, n: int) -> list:
    if quant is None:
        return [None] * n
    if isinstance(quant, tuple) and len(quant) == 2 and not isinstance(quant[0], (tuple, list)):
        return [quant] * n
    q = list(quant)
    if len(q) != n:
        raise ValueError(f"expected {n} quantisation pairs, got {len(q)}")
    return q


def _gather_boxes(box_levels: list, quant: list, anchor_idx: np.ndarray, n_anchors: int) -> np.ndarray:
    """``(K, 4)`` float32 deltas for global anchor indices, dequantising per level."""
    if len(box_levels) == 1:
        flat = np.asarray(box_levels[0]).reshape(-1, 4)
        return _dequant(flat[anchor_idx], quant[0])
    out = np.empty((anchor_idx.size, 4), np.float32)
    start = 0
    for lv, arr in enumerate(box_levels):
        flat = np.asarray(arr).reshape(-1, 4)
        stop = start + flat.shape[0]
        sel = np.flatnonzero((anchor_idx >= start) & (anchor_idx < stop))
        if sel.size:
            out[sel] = _dequant(flat[anchor_idx[sel] - start], quant[lv])
        start = stop
    if start != n_anchors:
        raise ValueError(f"box outputs cover {start} anchors, expected {n_anchors}")
    return out


def to_original(dets: Detections, scale, image_shape) -> Detections:
    """Map input-pixel detections to the original image: undo the letterbox scale, clip.

    Args:
        dets: detections in network-input pixels.
        scale: letterbox scale (float) or ``(scale_y, scale_x)``; ``input = original * scale``.
        image_shape: original ``(H, W, ...)``.

    Returns:
        New :class:`Detections`; boxes with zero area after clipping are dropped.
    """
    sy, sx = (scale, scale) if np.isscalar(scale) else (float(scale[0]), float(scale[1]))
    h, w = int(image_shape[0]), int(image_shape[1])
    b = dets.boxes.astype(np.float32, copy=True)
    b[:, [0, 2]] = np.clip(b[:, [0, 2]] / sx, 0, w)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]] / sy, 0, h)
    ok = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    if ok.all():
        return Detections(b, dets.scores, dets.classes, dets.labels)
    return Detections(b[ok], dets.scores[ok], dets.classes[ok], dets.labels)


def from_nms_outputs(
    boxes: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray,
    count,
    input_size,
    score_threshold: float = 0.3,
    labels: Sequence[str] = (),
    class_offset: int = 0,
) -> Detections:
    """Standard 4-output detection model (TFLite_Detection_PostProcess) -> input-pixel detections.

    Args:
        boxes: ``(1, K, 4)`` or ``(K, 4)`` normalised ``(ymin, xmin, ymax, xmax)`` on the input canvas.
        classes: ``(1, K)`` class ids (float).
        scores: ``(1, K)`` probabilities.
        count: number of valid rows.
        input_size: ``(h, w)`` of the network input.
        score_threshold: keep scores ``> score_threshold``.
        labels: class names.
        class_offset: added to class ids (e.g. -1 when the model counts a background class).

    Returns:
        :class:`Detections` in input pixels, by descending score.
    """
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    c = np.asarray(classes).reshape(-1)
    s = np.asarray(scores, np.float32).reshape(-1)
    n = min(int(np.asarray(count).reshape(-1)[0]), b.shape[0])
    b, c, s = b[:n], c[:n], s[:n]
    ok = s > score_threshold
    b, c, s = b[ok], c[ok], s[ok]
    order = np.argsort(-s, kind="stable")
    b, c, s = b[order], c[order], s[order]
    h, w = float(input_size[0]), float(input_size[1])
    xyxy = np.stack([b[:, 1] * w, b[:, 0] * h, b[:, 3] * w, b[:, 2] * h], axis=1).astype(np.float32)
    cls = (np.round(c).astype(np.int32) + int(class_offset)).astype(np.int32)
    return Detections(xyxy.reshape(-1, 4), s, cls, tuple(labels))
