"""coco_evaluate on hand-made ground truth and detections (real pycocotools, no mocks)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from edgedet.runtime.detections import Detections
from edgedet.runtime.report.evaluate import coco_evaluate, mean_defined

pytest.importorskip("pycocotools")

NAMES = ("cat", "dog", "bird")


def _sample(boxes, classes, w=200, h=100):
    return SimpleNamespace(width=w, height=h, boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                           classes=np.asarray(classes, np.int32), image_id=0, image_path="x.jpg")


def _det(boxes, classes, scores=None):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.ones(len(boxes), np.float32) if scores is None else np.asarray(scores, np.float32)
    return Detections(boxes, scores, np.asarray(classes, np.int32), NAMES)


SAMPLES = [
    _sample([[10, 10, 60, 50], [100, 20, 180, 90]], [0, 1]),
    _sample([[30, 30, 90, 80]], [0]),
]


def test_perfect_predictions_score_one():
    dets = [_det(s.boxes, s.classes) for s in SAMPLES]
    r = coco_evaluate(SAMPLES, dets, NAMES)
    assert r["AP"] == pytest.approx(1.0)
    assert r["AP50"] == pytest.approx(1.0) and r["AP75"] == pytest.approx(1.0)
    assert r["per_class"]["cat"] == pytest.approx(1.0)
    assert r["per_class"]["dog"] == pytest.approx(1.0)
    assert r["per_class"]["bird"] == -1.0  # no ground truth
    assert r["precision_iou50"]["bird"] is None
    assert len(r["recall_thresholds"]) == 101
    assert r["precision_iou50"]["cat"] == [1.0] * 101
    assert r["num_gt"] == {"cat": 2, "dog": 1, "bird": 0}
    assert r["num_detections"] == 3
    json.dumps(r)  # serialisable as-is (run.json / report.json)


def test_shifted_box_lowers_ap_by_the_expected_amount():
    # Shift the first image's dog box right by 25 px: IoU = 55*70 / (2*80*70 - 55*70) = 0.524,
    # a hit at IoU threshold .50 only (of ten), so the dog's AP = 1/10 and AP50 stays 1.
    dets = [_det([[10, 10, 60, 50], [125, 20, 205, 90]], [0, 1]), _det(SAMPLES[1].boxes, [0])]
    r = coco_evaluate(SAMPLES, dets, NAMES)
    assert r["per_class"]["cat"] == pytest.approx(1.0)
    assert r["per_class"]["dog"] == pytest.approx(0.1)
    assert r["per_class_ap50"]["dog"] == pytest.approx(1.0)
    assert r["AP"] == pytest.approx(0.55)  # mean over the two classes with ground truth
    assert r["AP50"] == pytest.approx(1.0)
    assert mean_defined(r["per_class"].values()) == pytest.approx(0.55)


def test_false_positive_between_hits_lowers_precision_at_full_recall():
    # A confident wrong cat on image 2 ranks between the two true ones: precision 2/3 at recall 1.
    dets = [_det(SAMPLES[0].boxes, [0, 1]),
            _det([[150, 5, 190, 40], [30, 30, 90, 80]], [0, 0], scores=[0.9, 0.8])]
    r = coco_evaluate(SAMPLES, dets, NAMES)
    cat = np.asarray(r["precision_iou50"]["cat"])
    assert cat[0] == pytest.approx(1.0) and cat[-1] == pytest.approx(2 / 3, abs=1e-4)
    assert r["per_class"]["cat"] < 1.0


def test_empty_detections_score_zero():
    r = coco_evaluate(SAMPLES, [Detections.empty(NAMES), None], NAMES)
    assert r["AP"] == 0.0 and r["AP50"] == 0.0
    assert r["per_class"]["cat"] == 0.0 and r["per_class"]["bird"] == -1.0
    assert r["num_detections"] == 0


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError):
        coco_evaluate(SAMPLES, [None], NAMES)


def test_quiet(capsys):
    coco_evaluate(SAMPLES, [_det(s.boxes, s.classes) for s in SAMPLES], NAMES)
    assert capsys.readouterr().out == ""
