"""Evaluation plumbing: raw outputs -> Detector decode/NMS -> letterbox undone -> pycocotools.

A "perfect" network output (logits +12 on exactly the anchors the target encoder made
positive, deltas = their encoded targets) must come back as AP 1.0: that pins the box
conversion at every hop (encode, decode, un-letterbox, xyxy -> COCO xywh).
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pycocotools")

from edgedet.runtime.anchors import AnchorConfig, feature_sizes  # noqa: E402
from edgedet.runtime.report.evaluate import coco_evaluate  # noqa: E402
from edgedet.runtime.backends.base import Backend, TensorSpec  # noqa: E402
from edgedet.runtime.detector import Detector  # noqa: E402
from edgedet.runtime.outputs import OUTPUT_NAMES  # noqa: E402
from edgedet.train.evaluate_keras import eval_meta, format_metrics  # noqa: E402
from edgedet.train.targets import TargetEncoder  # noqa: E402
from edgedet.train.types import Sample  # noqa: E402

SIZE, K = 128, 3


def _levels(flat: np.ndarray, per_anchor: int, cfg: AnchorConfig) -> list[np.ndarray]:
    """``(N, C)`` in anchor order -> per-level ``(H, W, A*C)`` (the model's output layout)."""
    out, off = [], 0
    for h, w in feature_sizes((SIZE, SIZE)):
        n = h * w * cfg.num_anchors
        out.append(flat[off:off + n].reshape(h, w, cfg.num_anchors * per_anchor))
        off += n
    assert off == flat.shape[0]
    return out


class _Outputs(Backend):
    """A backend whose outputs are given arrays (batch of 1), for decoding known network outputs."""

    name = "given"

    def __init__(self, cfg: AnchorConfig):
        sizes = feature_sizes((SIZE, SIZE))
        self.inputs = [TensorSpec("images", (1, SIZE, SIZE, 3), np.dtype(np.float32))]
        self.outputs = [TensorSpec(n, (1, h, w, cfg.num_anchors * (K if n.startswith("class") else 4)),
                                   np.dtype(np.float32)) for n, (h, w) in zip(OUTPUT_NAMES, sizes + sizes)]


def _detector(cfg: AnchorConfig, soft: bool = False) -> Detector:
    meta = eval_meta(image_size=SIZE, mean=(0, 0, 0), std=(1, 1, 1), anchor_config=cfg, class_names=("a", "b", "c"))
    return Detector(_Outputs(cfg), meta, score_threshold=0.001, soft=soft)


def _decode(det: Detector, cls_l, box_l, scale, image_hw):
    return det.decode([o[None] for o in cls_l + box_l], (scale, scale), image_hw)


def _perfect(sample: Sample, cfg: AnchorConfig, enc: TargetEncoder):
    scale = min(SIZE / sample.height, SIZE / sample.width)
    cls_t, box_t = enc(sample.boxes * scale, sample.classes)
    logits = np.full((len(cls_t), K), -12.0, np.float32)
    pos = cls_t >= 0
    logits[pos, cls_t[pos]] = 12.0
    return _levels(logits, K, cfg), _levels(box_t, 4, cfg), scale


@pytest.mark.parametrize("soft", [False, True])
def test_perfect_prediction_gives_ap_1(soft):
    cfg = AnchorConfig(anchor_scale=3.0)
    enc = TargetEncoder(SIZE, cfg)
    det = _detector(cfg, soft)
    samples = [
        Sample("a.jpg", 640, 480, np.array([[10, 20, 200, 180], [300, 250, 420, 400], [500, 40, 560, 90]], np.float32),
               np.array([0, 1, 2], np.int32), 1),
        Sample("b.jpg", 300, 500, np.array([[20, 30, 120, 200], [150, 300, 280, 480]], np.float32),
               np.array([1, 1], np.int32), 2),
        Sample("c.jpg", 256, 256, np.array([[100, 100, 180, 170]], np.float32), np.array([2], np.int32), 3),
    ]
    dets = []
    for s in samples:
        cls_l, box_l, scale = _perfect(s, cfg, enc)
        d = _decode(det, cls_l, box_l, scale, (s.height, s.width))
        # one detection per object after NMS (soft-NMS keeps decayed duplicates at lower scores)
        assert len(d) >= len(s.classes)
        np.testing.assert_allclose(d.boxes[:len(s.classes)][np.argsort(d.classes[:len(s.classes)], kind="stable")],
                                   s.boxes[np.argsort(s.classes, kind="stable")], atol=0.05)
        dets.append(d)
    m = coco_evaluate(samples, dets, ["a", "b", "c"])
    assert m["AP"] == pytest.approx(1.0) and m["AP50"] == pytest.approx(1.0)
    assert all(v == pytest.approx(1.0) for v in m["per_class"].values())
    assert "AP 1.000" in format_metrics(m)


def test_shifted_prediction_lowers_ap():
    cfg = AnchorConfig(anchor_scale=3.0)
    enc = TargetEncoder(SIZE, cfg)
    s = Sample("a.jpg", 640, 480, np.array([[10, 20, 200, 180]], np.float32), np.array([0], np.int32), 1)
    cls_l, box_l, scale = _perfect(s, cfg, enc)
    wrong = Sample("a.jpg", 640, 480, s.boxes + np.array([[60, 0, 60, 0]], np.float32), s.classes, 1)
    d = _decode(_detector(cfg), cls_l, box_l, scale, (480, 640))
    m = coco_evaluate([wrong], [d], ["a", "b", "c"])
    assert m["AP"] < 0.5
