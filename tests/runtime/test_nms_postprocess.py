"""NMS against slow references; post-processing thresholds on float vs int8 outputs."""
from __future__ import annotations

import math

import numpy as np
import pytest

from edgedet.runtime.anchors import AnchorConfig, feature_sizes, generate_anchors
from edgedet.runtime.boxes import encode, iou_matrix
from edgedet.runtime.nms import hard_nms, nms, soft_nms
from edgedet.runtime.postprocess import from_nms_outputs, postprocess, score_to_logit, to_original


def _random_boxes(rng, n, span=200.0):
    xy = rng.uniform(0, span, (n, 2))
    wh = rng.uniform(5, 60, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def ref_hard_nms(boxes, scores, thr, max_det, classes=None):
    """Textbook greedy NMS, one pair at a time."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep = []
    for i in order:
        ok = True
        for j in keep:
            if classes is not None and classes[i] != classes[j]:
                continue
            if iou_matrix(boxes[i : i + 1], boxes[j : j + 1])[0, 0] > thr:
                ok = False
                break
        if ok:
            keep.append(i)
        if len(keep) == max_det:
            break
    return keep


def ref_soft_nms(boxes, scores, sigma, score_thr, max_det, classes=None):
    s = [float(v) for v in scores]
    alive = [i for i in range(len(s)) if s[i] >= score_thr]
    keep, kept = [], []
    while alive and len(keep) < max_det:
        i = max(alive, key=lambda k: s[k])
        keep.append(i)
        kept.append(s[i])
        alive.remove(i)
        for j in alive:
            if classes is not None and classes[i] != classes[j]:
                continue
            iou = float(iou_matrix(boxes[i : i + 1], boxes[j : j + 1])[0, 0])
            s[j] *= math.exp(-iou * iou / sigma)
        alive = [j for j in alive if s[j] >= score_thr]
    return keep, kept


@pytest.mark.parametrize("n,max_det", [(0, 100), (1, 100), (40, 100), (300, 100), (700, 100),
                                       (700, 7), (300, 1000)])  # > 256 or > the block: several blocks
@pytest.mark.parametrize("per_class", [False, True])
def test_hard_nms_matches_reference(n, max_det, per_class):
    rng = np.random.default_rng(n + per_class)
    boxes = _random_boxes(rng, n, span=300 if n > 100 else 150)
    scores = rng.permutation(n).astype(np.float32) / max(n, 1)  # distinct scores: order is defined
    classes = rng.integers(0, 4, n).astype(np.int32) if per_class else None
    got = hard_nms(boxes, scores, 0.5, max_det, classes)
    want = ref_hard_nms(boxes, scores, 0.5, max_det, classes)
    assert got.tolist() == want


def test_nms_dispatch_global_vs_class():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    classes = np.array([0, 1, 0], np.int32)
    idx, s = nms(boxes, scores, classes, 0.5, 10, mode="class")
    assert idx.tolist() == [0, 1, 2] and np.allclose(s, [0.9, 0.8, 0.7])
    idx, _ = nms(boxes, scores, classes, 0.5, 10, mode="global")
    assert idx.tolist() == [0, 2]
    idx, _ = nms(boxes, scores, classes, 0.5, 1, mode="class")
    assert idx.tolist() == [0]
    with pytest.raises(ValueError):
        nms(boxes, scores, classes, mode="sideways")


@pytest.mark.parametrize("per_class", [False, True])
def test_soft_nms_matches_reference(per_class):
    rng = np.random.default_rng(7)
    boxes = _random_boxes(rng, 80, span=120)
    scores = rng.uniform(0.05, 1, 80).astype(np.float32)
    classes = rng.integers(0, 3, 80).astype(np.int32) if per_class else None
    idx, s = soft_nms(boxes, scores, sigma=0.5, score_threshold=0.05, max_detections=30, classes=classes)
    want_idx, want_s = ref_soft_nms(boxes, scores, 0.5, 0.05, 30, classes)
    assert idx.tolist() == want_idx
    np.testing.assert_allclose(s, want_s, rtol=1e-5)
    # decayed scores never exceed the originals, and overlapping boxes do survive (soft)
    assert np.all(s <= scores[idx] + 1e-7)


def test_soft_nms_keeps_overlap_hard_drops_it():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 9]], np.float32)  # IoU 0.9
    scores = np.array([0.9, 0.8], np.float32)
    assert hard_nms(boxes, scores, 0.5).tolist() == [0]
    idx, s = soft_nms(boxes, scores, sigma=0.5, score_threshold=0.01)
    assert idx.tolist() == [0, 1]
    assert s[1] == pytest.approx(0.8 * math.exp(-0.81 / 0.5), rel=1e-5)


# ----------------------------------------------------------------------------- postprocess


def _raw_outputs(size=128, num_classes=5, seed=0, objects=()):
    """Per-level float logits/deltas with planted objects [(level, y, x, a, cls, logit)]."""
    cfg = AnchorConfig()
    a = cfg.num_anchors
    rng = np.random.default_rng(seed)
    cls = [rng.normal(-8, 1.0, (h, w, a * num_classes)).astype(np.float32) for h, w in feature_sizes((size, size))]
    box = [rng.normal(0, 0.2, (h, w, a * 4)).astype(np.float32) for h, w in feature_sizes((size, size))]
    for lv, y, x, k, c, v in objects:
        cls[lv][y, x, k * num_classes + c] = v
    return cls, box, generate_anchors(size, cfg)


def test_postprocess_decodes_planted_objects():
    anchors = generate_anchors(128)
    cls, box, _ = _raw_outputs(objects=[(0, 3, 4, 0, 2, 3.0), (1, 5, 2, 4, 1, 1.0)])
    # set the first object's deltas so it decodes to a known box
    target = np.array([[20.0, 10.0, 60.0, 50.0]], np.float32)
    flat_index = (3 * 16 + 4) * 9 + 0
    box[0].reshape(-1, 4)[flat_index] = encode(target, anchors.center[flat_index : flat_index + 1])[0]
    d = postprocess(cls, box, anchors, score_threshold=0.5, labels=["a", "b", "c", "d", "e"])
    assert len(d) == 2
    assert d.classes.tolist() == [2, 1]
    np.testing.assert_allclose(d.scores, 1 / (1 + np.exp(-np.array([3.0, 1.0]))), rtol=1e-6)
    np.testing.assert_allclose(d.boxes[0], target[0], atol=1e-3)
    assert d.label(0) == "c"
    # flattened (N, C) input and a batch dimension give the same result
    flat = postprocess(np.concatenate([c.reshape(-1, 5) for c in cls]), np.concatenate([b.reshape(-1, 4) for b in box]),
                       anchors, score_threshold=0.5)
    batched = postprocess([c[None] for c in cls], [b[None] for b in box], anchors.center, score_threshold=0.5)
    for other in (flat, batched):
        np.testing.assert_array_equal(other.boxes, d.boxes)
        np.testing.assert_array_equal(other.classes, d.classes)


def test_threshold_is_strict_and_on_logits():
    assert score_to_logit(0.5) == 0.0
    assert score_to_logit(0.0) == -math.inf and score_to_logit(1.0) == math.inf
    cls, box, anchors = _raw_outputs(objects=[(0, 0, 0, 0, 0, score_to_logit(0.3) + 1e-4), (0, 1, 1, 0, 0, score_to_logit(0.3) - 1e-4)])
    d = postprocess(cls, box, anchors, score_threshold=0.3)
    assert len(d) == 1 and d.scores[0] > 0.3
    assert len(postprocess(cls, box, anchors, score_threshold=1.0)) == 0


def _quantize(x, scale, zp, dtype):
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zp, info.min, info.max).astype(dtype)


@pytest.mark.parametrize("dtype,zp", [(np.int8, -20), (np.uint8, 160)])
def test_int8_threshold_equals_float_on_dequantised(dtype, zp):
    """Thresholding quantised integers must select exactly what dequantise-then-threshold selects."""
    rng = np.random.default_rng(3)
    cls, box, anchors = _raw_outputs(seed=3)
    scale, bscale = 0.07, 0.01
    cls = [c + rng.normal(6, 2.5, c.shape).astype(np.float32) for c in cls]  # many values near thresholds
    qc = [_quantize(c, scale, zp, dtype) for c in cls]
    qb = [_quantize(b, bscale, 0 if dtype == np.int8 else 128, dtype) for b in box]
    bzp = 0 if dtype == np.int8 else 128
    deq_c = [(q.astype(np.float32) - zp) * scale for q in qc]
    deq_b = [(q.astype(np.float32) - bzp) * bscale for q in qb]
    for thr in (0.05, 0.3, 0.5, 0.9):
        a = postprocess(qc, qb, anchors, thr, class_quant=(scale, zp), box_quant=[(bscale, bzp)] * 5, pre_nms_topk=100000)
        b = postprocess(deq_c, deq_b, anchors, thr, pre_nms_topk=100000)
        assert len(a) == len(b) > 0
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-4)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)
        np.testing.assert_array_equal(a.classes, b.classes)


def test_pre_nms_topk_and_max_detections():
    cls, box, anchors = _raw_outputs(seed=1)
    cls = [c + 9.0 for c in cls]  # everything passes a low threshold
    d = postprocess(cls, box, anchors, score_threshold=0.01, pre_nms_topk=50, max_detections=7)
    assert len(d) == 7
    assert np.all(np.diff(d.scores) <= 0)
    g = postprocess(cls, box, anchors, score_threshold=0.01, nms="global", max_detections=1000)
    c = postprocess(cls, box, anchors, score_threshold=0.01, nms="class", max_detections=1000)
    assert len(g) < len(c)
    s = postprocess(cls, box, anchors, score_threshold=0.01, soft=True, max_detections=1000)
    assert len(s) >= len(c)


def test_to_original_undoes_scale_and_clips():
    from edgedet.runtime.detections import Detections

    d = Detections(np.array([[10, 20, 50, 60], [-5, -5, 400, 300], [200, 200, 210, 210]], np.float32),
                   np.array([0.9, 0.8, 0.7], np.float32), np.array([0, 1, 2], np.int32), ("a", "b", "c"))
    o = to_original(d, 0.5, (240, 320, 3))
    np.testing.assert_allclose(o.boxes[0], [20, 40, 100, 120])
    np.testing.assert_allclose(o.boxes[1], [0, 0, 320, 240])
    assert len(o) == 2  # the third box lies entirely outside the 320x240 image
    s = to_original(d, (0.5, 0.25), (1000, 1000))
    np.testing.assert_allclose(s.boxes[0], [40, 40, 200, 120])


def test_from_nms_outputs():
    boxes = np.array([[[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0], [0, 0, 0, 0]]], np.float32)
    classes = np.array([[1.0, 0.0, 0.0]], np.float32)
    scores = np.array([[0.4, 0.9, 0.0]], np.float32)
    d = from_nms_outputs(boxes, classes, scores, np.array([2.0]), (100, 200), score_threshold=0.3, labels=("x", "y"))
    assert d.classes.tolist() == [0, 1] and d.scores.tolist() == pytest.approx([0.9, 0.4])
    np.testing.assert_allclose(d.boxes[1], [40, 10, 120, 50])
    assert d.label(1) == "y"


def test_threshold_hits_in_flat_order_on_large_levels():
    """Large levels may be scanned by OpenCV (compare + findNonZero): the same indices, in the
    same order, as numpy, for int8, uint8 and float32 logits, strict and not."""
    from edgedet.runtime.postprocess import _at_least

    rng = np.random.default_rng(3)
    for shape in ((1600, 810), (400, 810), (3, 5)):
        for dtype, bound in ((np.int8, 97), (np.uint8, 230), (np.int8, -128), (np.float32, float(np.float32(2.3)))):
            if np.issubdtype(dtype, np.integer):
                info = np.iinfo(dtype)
                v = rng.integers(info.min, info.max + 1, shape, dtype=dtype)
            else:
                v = rng.normal(0, 1, shape).astype(np.float32)
                v.flat[::977] = bound  # ties at the threshold must not pass a strict bound
            for strict in (False, True):
                ref = np.flatnonzero(v > bound if strict else v >= bound)
                np.testing.assert_array_equal(_at_least(v, bound, strict), ref)
    assert _at_least(np.full((1600, 810), -5, np.int8), 0, False).size == 0
