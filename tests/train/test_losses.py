"""Loss values on hand-made cases (computed by hand from the formulas)."""
from __future__ import annotations

import math

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from edgedet.train.losses import detection_loss, focal_loss, huber_box_loss, l2_regularisation  # noqa: E402


def _sig(x):
    return 1 / (1 + math.exp(-x))


def test_focal_loss_hand_values():
    # one anchor, two classes; target class 0; logits (0, 2)
    logits = tf.constant([[[0.0, 2.0]]])
    t = tf.constant([[0]])
    # class 0 (positive): p=0.5, ce=ln2, alpha=0.25, (1-p)^1.5
    pos = 0.25 * 0.5 ** 1.5 * math.log(2)
    # class 1 (negative): p=sig(2), p_t=1-p, ce=-ln(1-p), alpha 0.75, (p)^1.5
    p = _sig(2.0)
    neg = 0.75 * p ** 1.5 * -math.log(1 - p)
    got = float(focal_loss(logits, t, 2))
    assert got == pytest.approx(pos + neg, rel=1e-5)


def test_focal_loss_ignores_ignored_and_handles_negatives():
    logits = tf.constant([[[1.0], [1.0], [-3.0]]])
    t = tf.constant([[-2, -1, -1]])  # ignored, negative, negative
    expect = sum(0.75 * _sig(x) ** 1.5 * -math.log(1 - _sig(x)) for x in (1.0, -3.0))
    assert float(focal_loss(logits, t, 1)) == pytest.approx(expect, rel=1e-5)


def test_focal_loss_label_smoothing():
    logits = tf.constant([[[0.0]]])
    t = tf.constant([[0]])
    # y smoothed to 0.95; ce of logit 0 is ln2 for any y; factors use the hard label
    assert float(focal_loss(logits, t, 1, label_smoothing=0.1)) == pytest.approx(0.25 * 0.5 ** 1.5 * math.log(2), rel=1e-5)


def test_huber_box_loss_hand_values():
    pred = tf.constant([[[0.05, -0.3, 0.0, 0.0], [9.0, 9.0, 9.0, 9.0]]])
    target = tf.zeros((1, 2, 4))
    mask = tf.constant([[True, False]])
    # 0.5*0.05^2 + 0.1*(0.3-0.05) ; second anchor masked out
    expect = 0.5 * 0.05 ** 2 + 0.1 * (0.3 - 0.05)
    assert float(huber_box_loss(pred, target, mask, 0.1)) == pytest.approx(expect, rel=1e-5)


def test_detection_loss_normalisation_and_weight():
    # two levels' outputs, 1 class, A folded into a 1x1 map: 2 anchors in total
    cls = [tf.constant([[[[0.0]]]]), tf.constant([[[[0.0]]]])]
    box = [tf.constant([[[[0.2, 0.0, 0.0, 0.0]]]]), tf.zeros((1, 1, 1, 4))]
    cls_t = tf.constant([[0, -1]])
    box_t = tf.zeros((1, 2, 4))
    out = detection_loss(cls + box, cls_t, box_t, 1)
    npos = 1 + 1.0
    c = (0.25 * 0.5 ** 1.5 * math.log(2) + 0.75 * 0.5 ** 1.5 * math.log(2)) / npos
    b = 0.1 * (0.2 - 0.05) / (npos * 4)
    assert float(out["cls_loss"]) == pytest.approx(c, rel=1e-5)
    assert float(out["box_loss"]) == pytest.approx(b, rel=1e-5)
    assert float(out["loss"]) == pytest.approx(c + 50 * b, rel=1e-5)
    assert float(out["num_positives"]) == 1


def test_l2_regularisation_kernels_only():
    k = tf.Variable(np.full((2, 2), 2.0, np.float32), name="conv/kernel")
    b = tf.Variable(np.full((2,), 5.0, np.float32), name="conv/bias")
    assert float(l2_regularisation([k, b], 4e-5)) == pytest.approx(4e-5 * 16 / 2)
