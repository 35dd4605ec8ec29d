"""Target encoder: matching thresholds, force-match and the encode->decode round trip."""
from __future__ import annotations

import numpy as np

from edgedet.runtime.anchors import AnchorConfig, generate_anchors
from edgedet.runtime.boxes import decode, iou_matrix
from edgedet.train.targets import IGNORE, NEGATIVE, TargetEncoder


def test_positive_targets_decode_back_to_their_box():
    enc = TargetEncoder(128, AnchorConfig())
    boxes = np.array([[10, 20, 60, 70], [70, 30, 120, 100]], np.float32)
    classes = np.array([2, 0], np.int32)
    cls_t, box_t = enc(boxes, classes)
    assert cls_t.shape == (len(enc.anchors),) and box_t.shape == (len(enc.anchors), 4)
    pos = np.nonzero(cls_t >= 0)[0]
    assert len(pos) > 0
    decoded = decode(box_t[pos], enc.anchors.center[pos])
    iou = iou_matrix(decoded, boxes)
    # every positive decodes exactly onto the ground truth of its own class
    for k, i in enumerate(pos):
        j = int(iou[k].argmax())
        assert iou[k, j] > 0.999
        assert classes[j] == cls_t[i]
    assert {int(c) for c in cls_t[pos]} == {0, 2}


def test_thresholds_positive_ignore_negative():
    anchors = generate_anchors(128, AnchorConfig())
    enc = TargetEncoder(128, AnchorConfig(), force_match=False)
    box = np.array([[16, 16, 80, 80]], np.float32)
    iou = iou_matrix(anchors.xyxy, box)[:, 0]
    cls_t, box_t = enc(box, np.array([1]))
    np.testing.assert_array_equal(cls_t[iou >= 0.5], 1)
    np.testing.assert_array_equal(cls_t[iou < 0.4], NEGATIVE)
    mid = (iou >= 0.4) & (iou < 0.5)
    assert mid.any()
    np.testing.assert_array_equal(cls_t[mid], IGNORE)
    assert np.all(box_t[cls_t < 0] == 0)


def test_force_match_gives_tiny_box_a_positive():
    tiny = np.array([[40, 40, 43, 44]], np.float32)  # far below IoU 0.5 with every anchor
    no_force = TargetEncoder(128, AnchorConfig(), force_match=False)(tiny, np.array([0]))[0]
    forced = TargetEncoder(128, AnchorConfig())(tiny, np.array([0]))[0]
    assert (no_force >= 0).sum() == 0
    assert (forced >= 0).sum() == 1


def test_padding_and_empty_images_are_all_negative():
    enc = TargetEncoder(64, AnchorConfig())
    cls_t, box_t = enc(np.zeros((3, 4), np.float32), np.array([-1, -1, -1]))
    assert np.all(cls_t == NEGATIVE) and np.all(box_t == 0)
    cls_t, _ = enc(np.zeros((0, 4), np.float32), np.zeros((0,), np.int32))
    assert np.all(cls_t == NEGATIVE)
