"""tf.data input pipeline: decode, augment, letterbox, normalise, encode targets.

Geometry contract (same as :mod:`edgedet.runtime.preprocess`): the image is scaled so its
longer side fits the square input ``S``, placed at the top-left and padded bottom/right with
normalised 0 (= the mean pixel). Training adds, as in the EfficientDet paper / automl:

* horizontal flip (p = 0.5);
* scale jitter: the image is scaled to fit ``S * f`` with ``f ~ U(jitter_min, jitter_max)``
  (0.1-2.0 by default) and a random ``S x S`` window is cropped (smaller results are padded).

All randomness is stateless, seeded by ``(seed, epoch, sample index)``: an epoch's batches
are the same however many parallel workers run and after ``--resume``.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from edgedet.errors import DataError
from edgedet.train.targets import TargetEncoder


def _pack(samples) -> dict:
    """Samples -> padded numpy arrays (boxes ``(n, M, 4)``, classes ``(n, M)`` with -1 padding)."""
    if not samples:
        raise DataError("dataset split is empty: no images to train or evaluate on")
    m = max(1, max(len(s.classes) for s in samples))
    boxes = np.zeros((len(samples), m, 4), np.float32)
    classes = np.full((len(samples), m), -1, np.int32)
    for i, s in enumerate(samples):
        k = len(s.classes)
        if k:
            boxes[i, :k] = np.asarray(s.boxes, np.float32).reshape(-1, 4)
            classes[i, :k] = np.asarray(s.classes, np.int32)
    paths = np.array([str(s.image_path) for s in samples])
    return {"paths": paths, "boxes": boxes, "classes": classes}


def _load_rgb(path) -> np.ndarray:
    from edgedet.runtime.preprocess import load_image

    return load_image(np.asarray(path).item().decode("utf-8"))  # bytes (graph) or a 0-d array (eager)


def _decode(path):
    """``(H, W, 3)`` uint8 through the runtime's own loader (EXIF orientation applied,
    grayscale/CMYK/alpha converted), so training sees exactly the pixels the runtime sees."""
    img = tf.numpy_function(_load_rgb, [path], tf.uint8, stateful=False)
    img.set_shape([None, None, 3])
    return img


def _resize_boxes(image, boxes, scale):
    """Resize ``(H, W, 3)`` by ``scale`` (rounded like runtime.preprocess.letterbox)."""
    hw = tf.cast(tf.shape(image)[:2], tf.float32)
    new_hw = tf.maximum(tf.cast(tf.round(hw * scale), tf.int32), 1)
    img = tf.image.resize(tf.cast(image, tf.float32), new_hw, method="bilinear", antialias=True)
    return img, boxes * scale


def preprocess(image, boxes, classes, *, size: int, mean, std, training: bool, seed=None,
               jitter=(0.1, 2.0), flip: bool = True):
    """One example -> ``(image (S,S,3) float32 normalised, boxes (M,4) input px, classes (M,))``.

    Boxes cropped away by augmentation get class -1 and a zero box (the encoder skips them).
    """
    size_f = tf.cast(size, tf.float32)
    hw = tf.cast(tf.shape(image)[:2], tf.float32)
    h, w = hw[0], hw[1]
    if training:
        s1, s2, s3, s4 = (tf.random.experimental.stateless_split(seed, 4)[i] for i in range(4))
        if flip:
            do_flip = tf.random.stateless_uniform([], s1) < 0.5
            image = tf.cond(do_flip, lambda: tf.image.flip_left_right(image), lambda: image)
            flipped = tf.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], axis=1)
            boxes = tf.where(do_flip, flipped, boxes)
        factor = tf.random.stateless_uniform([], s2, jitter[0], jitter[1])
        scale = tf.minimum(size_f * factor / h, size_f * factor / w)
        image, boxes = _resize_boxes(image, boxes, scale)
        sh = tf.cast(tf.shape(image)[0], tf.float32)
        sw = tf.cast(tf.shape(image)[1], tf.float32)
        oy = tf.floor(tf.random.stateless_uniform([], s3) * tf.maximum(sh - size_f, 0.0))
        ox = tf.floor(tf.random.stateless_uniform([], s4) * tf.maximum(sw - size_f, 0.0))
        image = image[tf.cast(oy, tf.int32):tf.cast(oy, tf.int32) + size,
                      tf.cast(ox, tf.int32):tf.cast(ox, tf.int32) + size]
        boxes = boxes - tf.stack([ox, oy, ox, oy])
        lim = tf.stack([tf.minimum(sw - ox, size_f), tf.minimum(sh - oy, size_f)] * 2)
        boxes = tf.clip_by_value(boxes, 0.0, lim)
        # A box clipped to under 2 px in either side is no longer a visible object.
        keep = ((boxes[:, 2] - boxes[:, 0]) >= 2.0) & ((boxes[:, 3] - boxes[:, 1]) >= 2.0) & (classes >= 0)
        classes = tf.where(keep, classes, -1)
        boxes = tf.where(keep[:, None], boxes, 0.0)
    else:
        scale = tf.minimum(size_f / h, size_f / w)
        image, boxes = _resize_boxes(image, boxes, scale)
        image = image[:size, :size]
    image = (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
    # Padding after normalisation = the mean pixel before it (the runtime's letterbox fill).
    image = tf.image.pad_to_bounding_box(image, 0, 0, size, size)
    return image, boxes, classes


def make_dataset(samples, *, image_size: int, num_classes: int, mean, std, anchor_config, batch_size: int,
                 training: bool, epoch: int = 0, seed: int = 0, jitter=(0.1, 2.0), flip: bool = True,
                 drop_remainder: bool | None = None, encoder: TargetEncoder | None = None,
                 epochs: range | None = None, shard: tuple[int, int] | None = None,
                 replica_batch: int | None = None) -> tf.data.Dataset:
    """Batched dataset of ``(images (B,S,S,3), {"cls": (B,N) int32, "box": (B,N,4) float32})``.

    Args:
        samples: list of :class:`edgedet.train.types.Sample`.
        training: shuffle + augment (else: letterbox only, in order).
        epoch, seed: select this epoch's shuffle order and augmentations.
        drop_remainder: default True when training (static batch shape for tf.distribute).
        epochs: training only: one stream over these epochs (e.g. ``range(start, total)``),
            ``steps_per_epoch`` batches each, exactly the batches that ``epoch=e`` gives for
            every ``e``. One iterator for the whole run keeps the prefetch buffer full across
            epoch boundaries; a new iterator per epoch stalled each epoch's start (pipeline
            instantiation and refill: ~10 s per epoch on 2 cores with a tiny model).
        shard: training only: ``(num_shards, index)``: this pipeline's contiguous
            ``batch_size / num_shards`` slice of every global batch (one worker's input).
        replica_batch: with ``shard``: the size of the batches yielded (the per-replica batch;
            a worker with several replicas hands them consecutive batches) [the slice].
    """
    del num_classes  # targets are class ids; kept in the signature for callers' clarity
    packed = _pack(samples)
    n = len(samples)
    if drop_remainder is None:
        drop_remainder = training and n >= batch_size
    encoder = encoder or TargetEncoder(image_size, anchor_config)
    num_anchors = encoder.num_anchors
    paths = tf.constant(packed["paths"])
    boxes_all = tf.constant(packed["boxes"])
    classes_all = tf.constant(packed["classes"])
    if not training:
        order, epoch_of = np.arange(n), np.full(n, epoch)
    else:
        # Each epoch contributes exactly the images its batches use (whole batches when
        # dropping the remainder), so flattened epochs batch into the same per-epoch batches.
        keep = steps_per_epoch(n, batch_size) * batch_size if drop_remainder else n
        eps = list(epochs) if epochs is not None else [epoch]
        order = np.concatenate([np.random.default_rng([seed, e]).permutation(n)[:keep] for e in eps])
        epoch_of = np.repeat(np.asarray(eps, np.int64), keep)
        if not drop_remainder:
            batch_size = min(batch_size, n)  # one (partial) batch per epoch, never straddling two
        if shard:
            order, epoch_of, batch_size = _shard(order, epoch_of, batch_size, shard, replica_batch)
    ds = tf.data.Dataset.from_tensor_slices((order.astype(np.int64), epoch_of.astype(np.int64)))

    def load(i, ep):
        img = _decode(tf.gather(paths, i))
        b, c = tf.gather(boxes_all, i), tf.gather(classes_all, i)
        sample_seed = tf.stack([seed * 100003 + ep, i])
        img, b, c = preprocess(img, b, c, size=image_size, mean=mean, std=std, training=training,
                               seed=sample_seed, jitter=jitter, flip=flip)
        cls_t, box_t = tf.numpy_function(encoder, [b, c], [tf.int32, tf.float32], stateful=False)
        cls_t.set_shape([num_anchors])
        box_t.set_shape([num_anchors, 4])
        img.set_shape([image_size, image_size, 3])
        return img, {"cls": cls_t, "box": box_t}

    opts = tf.data.Options()
    opts.deterministic = True
    opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = ds.with_options(opts)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)


def _shard(order, epoch_of, batch_size: int, shard: tuple[int, int], replica_batch: int | None):
    """Keep slice ``index`` of ``num_shards`` of every global batch of ``order`` (and ``epoch_of``)."""
    num, index = shard
    if batch_size % num or len(order) % batch_size:
        raise DataError(f"batch {batch_size} does not split into {num} equal worker slices of whole batches")
    width = batch_size // num
    cols = slice(index * width, (index + 1) * width)
    order = order.reshape(-1, batch_size)[:, cols].reshape(-1)
    epoch_of = epoch_of.reshape(-1, batch_size)[:, cols].reshape(-1)
    return order, epoch_of, int(replica_batch or width)


def steps_per_epoch(num_samples: int, batch_size: int) -> int:
    """Training steps per epoch (drop_remainder, but at least 1)."""
    return max(num_samples // batch_size, 1)
