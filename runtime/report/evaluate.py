"""COCO-style evaluation shared by ``edgedet eval`` and ``edgedet validate``.

Both commands go through :func:`coco_evaluate` with the same :class:`Detections`, so the float
baseline's AP in a validation report is bit-identical to ``edgedet eval``'s for the same weights.

pycocotools is imported inside the function: ``edgedet.runtime`` stays numpy-only at import.
"""
from __future__ import annotations

import contextlib
import io
import math
from typing import Sequence

import numpy as np

SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")

# Post-processing used for every accuracy measurement (`edgedet eval`, `edgedet validate`), so the
# numbers agree: a low score floor and 100 detections per image, as COCO evaluation expects
# (a deployment threshold like 0.3 would cut the low-recall end of the PR curve).
EVAL_POSTPROCESS = {"score_threshold": 0.001, "iou_threshold": 0.5, "max_detections": 100, "nms": "class"}
# Indices into COCOeval.stats, in SUMMARY_KEYS order.
_STATS_INDEX = (0, 1, 2, 3, 4, 5)


def _xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)


def _coco_objects(samples, detections, num_classes: int):
    """Build in-memory pycocotools COCO objects for ground truth and detections.

    Image ids are the sample's position (1-based), not ``Sample.image_id``, so duplicate or
    string ids from any reader cannot collide. Category ids are ``class + 1``.
    """
    from pycocotools.coco import COCO

    images, gt_anns, dt_anns = [], [], []
    for i, (s, det) in enumerate(zip(samples, detections)):
        img_id = i + 1
        images.append({"id": img_id, "width": int(s.width), "height": int(s.height)})
        for box, cls in zip(_xyxy_to_xywh(s.boxes), np.asarray(s.classes).reshape(-1)):
            w, h = float(box[2]), float(box[3])
            gt_anns.append({
                "id": len(gt_anns) + 1, "image_id": img_id, "category_id": int(cls) + 1,
                "bbox": [float(box[0]), float(box[1]), w, h], "area": w * h, "iscrowd": 0,
            })
        if det is None or len(det) == 0:
            continue
        for box, score, cls in zip(_xyxy_to_xywh(det.boxes), det.scores, det.classes):
            w, h = float(box[2]), float(box[3])
            dt_anns.append({
                "id": len(dt_anns) + 1, "image_id": img_id, "category_id": int(cls) + 1,
                "bbox": [float(box[0]), float(box[1]), w, h], "area": w * h,
                "score": float(score), "iscrowd": 0,
            })
    cats = [{"id": k + 1, "name": str(k)} for k in range(num_classes)]
    gt, dt = COCO(), COCO()
    gt.dataset = {"images": images, "annotations": gt_anns, "categories": cats}
    # Built directly (not COCO.loadRes) because loadRes rejects an empty detection list.
    dt.dataset = {"images": list(images), "annotations": dt_anns, "categories": cats}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt.createIndex()
    return gt, dt


def _mean_valid(a: np.ndarray) -> float:
    """Mean over entries > -1 (pycocotools marks 'no ground truth' with -1); -1.0 when none."""
    v = a[a > -1]
    return float(np.mean(v)) if v.size else -1.0


def _curve(a: np.ndarray) -> list[float] | None:
    """A 101-point precision curve as a JSON-friendly list, or None when the class had no GT."""
    if not np.any(a > -1):
        return None
    return [round(float(x), 5) for x in np.where(a > -1, a, 0.0)]


def coco_evaluate(samples: Sequence, detections: Sequence, class_names: Sequence[str],
                  max_dets: int = 100) -> dict:
    """COCO box metrics for one model on one set of images.

    Args:
        samples: ground truth, each with ``width``, ``height``, ``boxes`` ``(N, 4)`` xyxy px and
            ``classes`` ``(N,)`` 0-based (e.g. :class:`edgedet.train.types.Sample`).
        detections: one :class:`edgedet.runtime.detections.Detections` (or None) per sample, boxes
            xyxy in original-image pixels.
        class_names: names indexed by class id.
        max_dets: detections per image kept by COCOeval (its largest maxDets setting).

    Returns:
        A JSON-serialisable dict:
          * ``AP, AP50, AP75, APs, APm, APl``: floats in [0, 1]; -1.0 where COCO has no ground
            truth for that size range (pycocotools' convention).
          * ``per_class``: ``{name: AP@[.5:.95]}`` (area all, maxDets ``max_dets``), -1.0 for a
            class without ground truth in these samples.
          * ``per_class_ap50``: ``{name: AP@.5}`` likewise.
          * ``recall_thresholds``: the 101 recall points of the PR curves.
          * ``precision_iou50`` / ``precision_mean``: ``{name: [101 floats] | None}`` precision at
            each recall point, at IoU 0.5 and averaged over IoU .5:.95 (None: no ground truth).
          * ``num_gt``: ``{name: int}`` ground-truth boxes per class; ``num_images``;
            ``num_detections``.

    Raises:
        ValueError: when ``samples`` and ``detections`` differ in length.
    """
    from pycocotools.cocoeval import COCOeval

    if len(samples) != len(detections):
        raise ValueError(f"coco_evaluate: {len(samples)} samples but {len(detections)} detection lists")
    names = [str(n) for n in class_names]
    k = len(names)
    gt, dt = _coco_objects(samples, detections, k)
    ev = COCOeval(gt, dt, iouType="bbox")
    ev.params.maxDets = [1, 10, max_dets]
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = ev.stats
    result: dict = {key: float(stats[i]) for key, i in zip(SUMMARY_KEYS, _STATS_INDEX)}
    # precision: [T iou thresholds, R recall points, K classes, A area ranges, M maxDets]
    prec = np.asarray(ev.eval["precision"])
    a_all = list(ev.params.areaRngLbl).index("all")
    m_top = len(ev.params.maxDets) - 1
    t50 = int(np.argmin(np.abs(np.asarray(ev.params.iouThrs) - 0.5)))
    per_class, per_class50, pr50, prmean, num_gt = {}, {}, {}, {}, {}
    gt_counts = np.zeros(k, np.int64)
    for s in samples:
        c = np.asarray(s.classes, np.int64).reshape(-1)
        c = c[(c >= 0) & (c < k)]
        gt_counts += np.bincount(c, minlength=k)
    for j, name in enumerate(names):
        p = prec[:, :, j, a_all, m_top]  # (T, R)
        per_class[name] = _mean_valid(p)
        per_class50[name] = _mean_valid(p[t50])
        pr50[name] = _curve(p[t50])
        # A class with ground truth has no -1 entries, one without has only -1s.
        prmean[name] = _curve(p.mean(axis=0)) if np.all(p > -1) else None
        num_gt[name] = int(gt_counts[j])
    result.update({
        "per_class": per_class,
        "per_class_ap50": per_class50,
        "recall_thresholds": [round(float(r), 4) for r in ev.params.recThrs],
        "precision_iou50": pr50,
        "precision_mean": prmean,
        "num_gt": num_gt,
        "num_images": len(samples),
        "num_detections": int(sum(0 if d is None else len(d) for d in detections)),
    })
    return result


def mean_defined(values) -> float | None:
    """Mean of the values that are defined (not None, not NaN, not pycocotools' -1)."""
    v = [float(x) for x in values if x is not None and not math.isnan(float(x)) and float(x) > -1]
    return sum(v) / len(v) if v else None
