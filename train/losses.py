"""EfficientDet losses: sigmoid focal loss + Huber box loss (google/automl ``det_model_fn``).

Both are summed over anchors and divided by the number of positive anchors + 1 (the
+1 keeps images without objects finite). Under tf.distribute the positive count is the
global one, so the replicas' summed gradients equal the single-device gradient.
"""
from __future__ import annotations

import tensorflow as tf

from edgedet.train.targets import IGNORE


def flatten_outputs(outputs, num_classes: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Model outputs -> anchor-ordered tensors.

    Args:
        outputs: the model's 10 outputs (class_p3..class_p7, box_p3..box_p7), each
            ``(B, H_L, W_L, A*K)`` / ``(B, H_L, W_L, A*4)``; or a dict by output name.

    Returns:
        cls_logits ``(B, N_anchors, num_classes)`` and box_deltas ``(B, N_anchors, 4)``,
        in the order of :func:`edgedet.runtime.anchors.generate_anchors`.
    """
    if isinstance(outputs, dict):
        names = sorted(outputs)
        cls_out = [outputs[n] for n in names if n.startswith("class")]
        box_out = [outputs[n] for n in names if n.startswith("box")]
    else:
        half = len(outputs) // 2
        cls_out, box_out = list(outputs[:half]), list(outputs[half:])
    b = tf.shape(cls_out[0])[0]
    cls = tf.concat([tf.reshape(t, [b, -1, num_classes]) for t in cls_out], axis=1)
    box = tf.concat([tf.reshape(t, [b, -1, 4]) for t in box_out], axis=1)
    return cls, box


def focal_loss(logits, cls_targets, num_classes: int, alpha: float = 0.25, gamma: float = 1.5,
               label_smoothing: float = 0.0) -> tf.Tensor:
    """Summed sigmoid focal loss (not yet normalised).

    Args:
        logits: ``(B, N, K)`` raw class logits.
        cls_targets: ``(B, N)`` int: class id, -1 negative, -2 ignored.

    Returns:
        scalar float32: the sum over all non-ignored anchors and classes.
    """
    logits = tf.cast(logits, tf.float32)
    cls_targets = tf.cast(cls_targets, tf.int32)
    y = tf.one_hot(cls_targets, num_classes, dtype=tf.float32)  # -1/-2 -> all zeros
    p = tf.sigmoid(logits)
    p_t = y * p + (1.0 - y) * (1.0 - p)
    alpha_factor = y * alpha + (1.0 - y) * (1.0 - alpha)
    modulating = tf.pow(1.0 - p_t, gamma)
    if label_smoothing:
        y = y * (1.0 - label_smoothing) + 0.5 * label_smoothing
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits)
    loss = alpha_factor * modulating * ce
    keep = tf.cast(tf.not_equal(cls_targets, IGNORE), tf.float32)[..., None]
    return tf.reduce_sum(loss * keep)


def huber_box_loss(box_deltas, box_targets, positive_mask, delta: float = 0.1) -> tf.Tensor:
    """Summed element-wise Huber loss over positive anchors (not yet normalised).

    Args:
        box_deltas, box_targets: ``(B, N, 4)``.
        positive_mask: ``(B, N)`` bool or 0/1.

    Returns:
        scalar: sum of ``0.5 x^2`` (|x| <= delta) or ``delta (|x| - delta/2)``.
    """
    x = tf.abs(tf.cast(box_deltas, tf.float32) - tf.cast(box_targets, tf.float32))
    h = tf.where(x <= delta, 0.5 * tf.square(x), delta * (x - 0.5 * delta))
    return tf.reduce_sum(h * tf.cast(positive_mask, tf.float32)[..., None])


def detection_loss(outputs, cls_targets, box_targets, num_classes: int, *, alpha: float = 0.25,
                   gamma: float = 1.5, label_smoothing: float = 0.0, delta: float = 0.1,
                   box_weight: float = 50.0, num_positives=None) -> dict:
    """Total detection loss for a batch.

    Args:
        outputs: model outputs (see :func:`flatten_outputs`).
        cls_targets: ``(B, N)`` int; box_targets: ``(B, N, 4)``.
        num_positives: override the normaliser's positive count (the all-reduced global count
            under tf.distribute); default: positives in this batch.

    Returns:
        dict of scalars: ``loss`` (cls + box_weight * box), ``cls_loss``, ``box_loss``, ``num_positives``.
    """
    cls, box = flatten_outputs(outputs, num_classes)
    positive = tf.greater_equal(cls_targets, 0)
    local_pos = tf.reduce_sum(tf.cast(positive, tf.float32))
    npos = (local_pos if num_positives is None else tf.cast(num_positives, tf.float32)) + 1.0
    cls_loss = focal_loss(cls, cls_targets, num_classes, alpha, gamma, label_smoothing) / npos
    box_loss = huber_box_loss(box, box_targets, positive, delta) / (npos * 4.0)
    return {"loss": cls_loss + box_weight * box_loss, "cls_loss": cls_loss, "box_loss": box_loss,
            "num_positives": local_pos}


def l2_regularisation(variables, weight_decay: float) -> tf.Tensor:
    """automl-style weight decay: ``wd * sum(l2_loss(v))`` over kernels only (no BN, no bias)."""
    kernels = [v for v in variables if "kernel" in v.name]
    if not kernels or not weight_decay:
        return tf.constant(0.0)
    return weight_decay * tf.add_n([tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in kernels])
