"""Anchor matching: ground-truth boxes -> per-anchor class and box targets.

Uses the runtime's own anchors (:mod:`edgedet.runtime.anchors`) and box coder
(:func:`edgedet.runtime.boxes.encode`), so what the network learns to predict is by
construction what the on-device decoder (:func:`edgedet.runtime.boxes.decode`) undoes.

Matching rule (google/automl ``ArgMaxMatcher``):

* IoU >= ``pos_iou`` (0.5) with its best ground truth -> positive for that box's class;
* IoU < ``neg_iou`` (0.4) with every ground truth -> negative (background);
* in between -> ignored (contributes no classification loss);
* additionally every ground truth's best anchor is forced positive (automl's
  ``force_match_for_each_row=True``), so small or oddly shaped objects that reach no
  anchor at IoU 0.5 still get a positive. Without it, BCCD platelets at small input
  sizes would have no positives at all.
"""
from __future__ import annotations

import numpy as np

from edgedet.runtime.anchors import AnchorConfig, generate_anchors
from edgedet.runtime.boxes import encode

# Class-target codes (class ids are >= 0).
NEGATIVE = -1
IGNORE = -2


class TargetEncoder:
    """Encodes one image's boxes into targets for every anchor.

    Args:
        image_size: network input size (int or ``(h, w)``); boxes are in these pixels.
        anchor_config: anchor settings (the model config's ``anchor_config``).
        pos_iou: IoU at or above which an anchor is positive.
        neg_iou: IoU below which an anchor is negative.
        force_match: make every ground truth's best anchor positive.
    """

    def __init__(self, image_size, anchor_config: AnchorConfig | None = None,
                 pos_iou: float = 0.5, neg_iou: float = 0.4, force_match: bool = True):
        self.anchors = generate_anchors(image_size, anchor_config or AnchorConfig())
        self.num_anchors = len(self.anchors)
        self._anchor_xyxy = self.anchors.xyxy
        self._anchor_area = ((self._anchor_xyxy[:, 2] - self._anchor_xyxy[:, 0])
                             * (self._anchor_xyxy[:, 3] - self._anchor_xyxy[:, 1]))
        self.pos_iou, self.neg_iou, self.force_match = float(pos_iou), float(neg_iou), bool(force_match)

    def _iou(self, boxes: np.ndarray) -> np.ndarray:
        """``(N_anchors, M)`` IoU; same formula as runtime.boxes.iou_matrix with cached anchor areas."""
        a = self._anchor_xyxy
        lt = np.maximum(a[:, None, :2], boxes[None, :, :2])
        rb = np.minimum(a[:, None, 2:], boxes[None, :, 2:])
        wh = np.clip(rb - lt, 0, None)
        inter = wh[..., 0] * wh[..., 1]
        area_b = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        return inter / np.maximum(self._anchor_area[:, None] + area_b[None, :] - inter, 1e-9)

    def __call__(self, boxes: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Match boxes to anchors.

        Args:
            boxes: ``(M, 4)`` xyxy in input pixels. Rows with zero/negative area (padding,
                boxes cropped away by augmentation) are ignored.
            classes: ``(M,)`` class ids; rows with a negative id are ignored too.

        Returns:
            cls_targets: ``(N_anchors,)`` int32: class id, ``NEGATIVE`` (-1) or ``IGNORE`` (-2).
            box_targets: ``(N_anchors, 4)`` float32 (ty, tx, th, tw); zeros where not positive.
        """
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        classes = np.asarray(classes).reshape(-1).astype(np.int32)
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) & (classes >= 0)
        boxes, classes = boxes[valid], classes[valid]
        n = self.num_anchors
        cls_t = np.full((n,), NEGATIVE, np.int32)
        box_t = np.zeros((n, 4), np.float32)
        if boxes.shape[0] == 0:
            return cls_t, box_t
        iou = self._iou(boxes)  # (N, M)
        best_gt = iou.argmax(axis=1)
        best_iou = iou[np.arange(n), best_gt]
        positive = best_iou >= self.pos_iou
        cls_t[(best_iou >= self.neg_iou) & ~positive] = IGNORE
        if self.force_match:
            # Each ground truth claims its best anchor (later boxes win a shared anchor,
            # as in automl); an anchor that overlaps nothing is not forced.
            best_anchor = iou.argmax(axis=0)
            has_overlap = iou[best_anchor, np.arange(boxes.shape[0])] > 0
            forced = best_anchor[has_overlap]
            best_gt[forced] = np.nonzero(has_overlap)[0]
            positive[forced] = True
        idx = np.nonzero(positive)[0]
        cls_t[idx] = classes[best_gt[idx]]
        box_t[idx] = encode(boxes[best_gt[idx]], self.anchors.center[idx])
        return cls_t, box_t
