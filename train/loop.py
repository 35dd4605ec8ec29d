"""The distributed training step and one epoch of steps (used by :class:`edgedet.train.trainer.Trainer`).

One ``tf.function`` step per global batch: forward, focal + Huber loss normalised by the GLOBAL
number of positives (all-reduced over every replica of every worker), L2 on kernels, gradients
all-reduced (SUM: each replica's loss is already its share of the global mean), clipped by global
norm, applied, then the EMA shadow is updated (cross-replica context). Under mixed precision the
loss is scaled for the float16 backward pass and the gradients unscaled before the all-reduce.
"""
from __future__ import annotations

import itertools
import math
import sys
import time

from edgedet.errors import EdgedetError


class TrainingDiverged(EdgedetError):
    """The loss became NaN/inf; the last good checkpoint is kept."""

    exit_code = 3


def make_step(tr):
    """``step(images (B,S,S,3), {"cls": (B,N), "box": (B,N,4)}) -> {"loss", "cls_loss", "box_loss"}`` (global sums).

    ``tr`` is the trainer (its strategy, model, optimizer, trainable variables, EMA, options).
    """
    import tensorflow as tf

    from edgedet.train.losses import detection_loss, l2_regularisation

    o, model, opt, tvars = tr.opts, tr.model, tr.optimizer, tr.tvars
    k, replicas = tr.cfg.num_classes, float(tr.replicas)
    scaled = hasattr(opt, "get_scaled_loss")  # a LossScaleOptimizer (mixed precision)

    def replica_fn(images, targets):
        ctx = tf.distribute.get_replica_context()
        cls_t, box_t = targets["cls"], targets["box"]
        local_pos = tf.reduce_sum(tf.cast(cls_t >= 0, tf.float32))
        global_pos = ctx.all_reduce(tf.distribute.ReduceOp.SUM, local_pos)
        with tf.GradientTape() as tape:
            outputs = [tf.cast(x, tf.float32) for x in model(images, training=True)]
            losses = detection_loss(outputs, cls_t, box_t, k, label_smoothing=o.label_smoothing,
                                    num_positives=global_pos)
            reg = l2_regularisation(tvars, o.weight_decay) / replicas
            total = losses["loss"] + reg
            target = opt.get_scaled_loss(total) if scaled else total
        grads = tape.gradient(target, tvars)
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, tvars)]
        if scaled:
            grads = opt.get_unscaled_gradients(grads)
        grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        grads, _ = tf.clip_by_global_norm(grads, o.clip_norm)
        opt.apply_gradients(zip(grads, tvars), skip_gradients_aggregation=True)
        return {"loss": total, "cls_loss": losses["cls_loss"], "box_loss": losses["box_loss"]}

    strategy, ema = tr.strategy, tr.ema

    @tf.function
    def step(images, targets):
        per_replica = strategy.run(replica_fn, args=(images, targets))
        ema.update()
        return {key: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for key, v in per_replica.items()}

    return step


def train_epoch(tr, epoch: int, step_fn, writer, batches) -> dict:
    """Run ``tr.steps_per_epoch`` steps from the iterator ``batches``; returns the log.csv row.

    Raises:
        TrainingDiverged: a non-finite loss (same on every worker: the losses are all-reduced).
    """
    import numpy as np
    import tensorflow as tf

    o, opt = tr.opts, tr.optimizer
    bar = None
    if o.progress:
        from tqdm import tqdm

        bar = tqdm(total=tr.steps_per_epoch, desc=f"epoch {epoch + 1}/{tr.epochs}", unit="step",
                   dynamic_ncols=True, file=sys.stderr)
    t0 = time.time()
    sums = {"loss": 0.0, "cls_loss": 0.0, "box_loss": 0.0}
    n = 0
    lr = tr.lr_at(int(opt.iterations.numpy()))
    step_times, t_step = [], time.time()
    for images, targets in itertools.islice(batches, tr.steps_per_epoch):
        lr = tr.lr_at(int(opt.iterations.numpy()))
        opt.learning_rate.assign(lr)
        tr._set_bn_momentum(int(opt.iterations.numpy()))
        vals = {k: float(v.numpy()) for k, v in step_fn(images, targets).items()}
        gstep = int(opt.iterations.numpy())
        if not all(math.isfinite(v) for v in vals.values()):
            if bar:
                bar.close()
            raise TrainingDiverged(
                f"training diverged: loss is {vals['loss']} at epoch {epoch + 1} step {n + 1} "
                f"(cls_loss {vals['cls_loss']}, box_loss {vals['box_loss']}, lr {lr:g}); "
                f"try a lower --lr; last good checkpoint kept in {tr.out}")
        n += 1
        step_times.append(time.time() - t_step)
        t_step = time.time()
        for k in sums:
            sums[k] += vals[k]
        if gstep % 10 == 0:
            with writer.as_default(step=gstep):
                for k, v in vals.items():
                    tf.summary.scalar(f"train/{k}", v)
                tf.summary.scalar("train/lr", lr)
        if bar:
            bar.set_postfix(loss=f"{sums['loss'] / n:.4f}", lr=f"{lr:.2e}", refresh=False)
            bar.update(1)
    if bar:
        bar.close()
    avg = {k: (v / max(n, 1)) for k, v in sums.items()}
    steady = float(np.mean(step_times[1:] or step_times))  # the first step of a process includes tracing
    return {"epoch": epoch + 1, "step": int(opt.iterations.numpy()), **{k: round(v, 6) for k, v in avg.items()},
            "lr": float(np.float32(lr)), "epoch_s": round(time.time() - t0, 1),
            "est_epoch_s": steady * tr.steps_per_epoch, "step_s": steady,
            "images_per_s": o.batch / max(steady, 1e-9)}
