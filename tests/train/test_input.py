"""tf.data pipeline: geometry matches the runtime letterbox, targets decode to the boxes, augmentation is seeded."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")
from PIL import Image  # noqa: E402

from edgedet.errors import DataError  # noqa: E402
from edgedet.runtime.anchors import AnchorConfig  # noqa: E402
from edgedet.runtime.boxes import decode, iou_matrix  # noqa: E402
from edgedet.runtime.preprocess import letterbox, load_image, normalize  # noqa: E402
from edgedet.train.input import make_dataset  # noqa: E402
from edgedet.train.targets import TargetEncoder  # noqa: E402
from edgedet.train.types import Sample  # noqa: E402

MEAN, STD = (127.0, 127.0, 127.0), (128.0, 128.0, 128.0)


def _samples(tmp_path, n=3, w=160, h=96):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[...] = (40 * i, 90, 200)
        img[20:60, 30 + 10 * i:90 + 10 * i] = (250, 20, 20)  # the object
        img = (img.astype(int) + rng.integers(-10, 10, img.shape)).clip(0, 255).astype(np.uint8)
        p = tmp_path / f"im{i}.png"
        Image.fromarray(img).save(p)
        out.append(Sample(str(p), w, h, np.array([[30 + 10 * i, 20, 90 + 10 * i, 60]], np.float32),
                          np.array([i % 2], np.int32), i))
    return out


def _ds(samples, training, size=64, **kw):
    return make_dataset(samples, image_size=size, num_classes=2, mean=MEAN, std=STD, anchor_config=AnchorConfig(),
                        batch_size=len(samples), training=training, **kw)


def test_eval_geometry_matches_runtime_letterbox_and_targets_decode_to_boxes(tmp_path):
    samples = _samples(tmp_path)
    images, targets = next(iter(_ds(samples, training=False)))
    assert images.shape == (3, 64, 64, 3)
    enc = TargetEncoder(64, AnchorConfig())
    for i, s in enumerate(samples):
        canvas, scale = letterbox(load_image(s.image_path), (64, 64), MEAN)
        ref = normalize(canvas, MEAN, STD)
        got = images[i].numpy()
        # top-left placement, normalised-0 padding: rows below 64*96/160 = 38.4 -> 38 are pad
        assert np.all(got[39:] == 0) and np.all(ref[39:] == 0)
        assert np.abs(got - ref).mean() < 0.02  # tf antialiased bilinear vs Pillow bilinear
        cls_t, box_t = targets["cls"][i].numpy(), targets["box"][i].numpy()
        pos = np.nonzero(cls_t >= 0)[0]
        assert len(pos) and np.all(cls_t[pos] == s.classes[0])
        dec = decode(box_t[pos], enc.anchors.center[pos])
        np.testing.assert_allclose(dec, np.repeat(s.boxes * scale, len(pos), 0), atol=1e-3)


def test_training_augmentation_is_seeded_and_keeps_boxes_on_objects(tmp_path):
    samples = _samples(tmp_path)
    a = next(iter(_ds(samples, training=True, epoch=3, seed=1, jitter=(0.5, 1.5))))
    b = next(iter(_ds(samples, training=True, epoch=3, seed=1, jitter=(0.5, 1.5))))
    c = next(iter(_ds(samples, training=True, epoch=4, seed=1, jitter=(0.5, 1.5))))
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    assert not np.array_equal(a[0].numpy(), c[0].numpy())
    enc = TargetEncoder(64, AnchorConfig())
    for i in range(len(samples)):
        img = a[0][i].numpy() * 128 + 127
        cls_t, box_t = a[1]["cls"][i].numpy(), a[1]["box"][i].numpy()
        pos = np.nonzero(cls_t >= 0)[0]
        if not len(pos):
            continue
        box = decode(box_t[pos[:1]], enc.anchors.center[pos[:1]])[0]
        x1, y1, x2, y2 = np.round(box).astype(int)
        inner = img[y1 + 2:y2 - 2, x1 + 2:x2 - 2]
        if inner.size:  # the red object lies under its (augmented) box
            assert inner[..., 0].mean() > 180 and inner[..., 1].mean() < 90


def test_empty_split_is_a_data_error():
    with pytest.raises(DataError, match="empty"):
        make_dataset([], image_size=64, num_classes=1, mean=MEAN, std=STD, anchor_config=AnchorConfig(),
                     batch_size=2, training=True)


def test_flip_and_jitter_boxes_stay_inside(tmp_path):
    samples = _samples(tmp_path, n=4)
    enc = TargetEncoder(64, AnchorConfig())
    for epoch in range(3):
        _, t = next(iter(_ds(samples, training=True, epoch=epoch, jitter=(0.1, 2.0))))
        cls_t, box_t = t["cls"].numpy(), t["box"].numpy()
        for i in range(4):
            pos = np.nonzero(cls_t[i] >= 0)[0]
            if len(pos):
                dec = decode(box_t[i][pos], enc.anchors.center[pos])
                assert dec.min() >= -1e-3 and dec.max() <= 64 + 1e-3
                assert iou_matrix(dec[:1], dec).min() > 0.99  # all positives encode one object


@pytest.mark.parametrize("n, batch", [(5, 2), (3, 4)])  # remainder dropped / one partial batch per epoch
def test_one_stream_over_epochs_gives_each_epochs_own_batches(tmp_path, n, batch):
    """The trainer's single multi-epoch iterator yields exactly what per-epoch datasets give."""
    samples = _samples(tmp_path, n=n)
    kw = dict(image_size=64, num_classes=2, mean=MEAN, std=STD, anchor_config=AnchorConfig(), batch_size=batch,
              training=True, seed=3)
    per_epoch = [b for e in (1, 2, 3) for b in make_dataset(samples, epoch=e, **kw)]
    stream = list(make_dataset(samples, epochs=range(1, 4), **kw))
    assert len(stream) == len(per_epoch) == 3 * max(n // batch, 1)
    for (im_a, t_a), (im_b, t_b) in zip(stream, per_epoch):
        np.testing.assert_array_equal(im_a.numpy(), im_b.numpy())
        np.testing.assert_array_equal(t_a["cls"].numpy(), t_b["cls"].numpy())
