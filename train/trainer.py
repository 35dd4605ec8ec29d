"""Custom training loop: SGD + momentum, warm-up/cosine LR, EMA, clipping, tf.distribute, resume.

One ``tf.function`` step per batch: forward, focal + Huber loss normalised by the GLOBAL
number of positives, L2 on kernels, gradients all-reduced across replicas, clipped by
global norm, applied, then the EMA shadow is updated (in cross-replica context). After
each epoch the EMA weights are evaluated on the val split (COCO AP through the runtime's
pre/post-processing), written as ``last`` (and ``best`` when the val AP improved), and the
full resumable state is saved — all atomically (see :mod:`edgedet.runs`).
"""
from __future__ import annotations

import csv
import io
import math
import sys
import time
from pathlib import Path

from edgedet.errors import ConfigError, EdgedetError
from edgedet import runs as ckpt
from edgedet.train.options import TrainOptions, freeze_layers, make_strategy  # noqa: F401 (re-exported)

CSV_FIELDS = ("epoch", "step", "loss", "cls_loss", "box_loss", "lr", "epoch_s", "val_AP", "val_AP50", "val_AP75")


class TrainingDiverged(EdgedetError):
    """The loss became NaN/inf; the last good checkpoint is kept."""

    exit_code = 3


class Trainer:
    """Builds everything for one run and trains it. See :func:`train`."""

    def __init__(self, opts: TrainOptions, resume: bool = False, log=None, epochs: int | None = None):
        self.opts, self.resume, self.epochs_override = opts, resume, epochs
        self.out = Path(opts.out)
        self.log = log or (lambda m: print(m, file=sys.stderr, flush=True))

    # ---------------------------------------------------------------- setup
    def _load_data(self):
        from edgedet.train.check import load_checked

        o = self.opts
        ds = load_checked(o.data, o.check_policy, classes=o.classes, log=self.log)
        from edgedet.train.stats import training_warnings

        for line in training_warnings(ds, o.image_size or _default_size(o.model)):
            self.log(f"warning: {line}")
        train = ds.splits.get("train") or []
        if not train:
            from edgedet.errors import DataError

            raise DataError(f"{o.data}: the train split is empty (no images to train on)")
        self.dataset = ds
        self.train_samples = train
        self.val_samples = [s for s in (ds.splits.get("val") or [])]

    def _build(self, state_meta: dict | None):
        import tensorflow as tf
        import tf_keras as keras

        from edgedet.model import build_model, get_config
        from edgedet.train.input import steps_per_epoch
        from edgedet.train.schedule import WeightEMA

        o = self.opts
        source = None
        if o.init and not state_meta:
            from edgedet.model.automl_import import open_init

            source = open_init(o.init, log=self.log)
            if o.model != source.variant:
                self.log(f"--init: the checkpoint is efficientdet-{source.variant}; training that (not {o.model})")
            o.model = source.variant  # recorded in run.json, so --resume rebuilds the same variant
        self.cfg = get_config(o.model, num_classes=len(self.dataset.class_names), image_size=o.image_size)
        self.strategy = make_strategy(o.strategy)
        self.replicas = self.strategy.num_replicas_in_sync
        if o.batch % self.replicas:
            raise ConfigError(f"--batch {o.batch} is not divisible by the {self.replicas} replicas")
        self.steps_per_epoch = steps_per_epoch(len(self.train_samples), o.batch)
        # --time-limit may have shortened the run; `--resume RUN --epochs N` sets a new length
        self.epochs = int(self.epochs_override or (state_meta or {}).get("epochs", o.epochs))
        self.warmup_steps = int(round(o.warmup_epochs * self.steps_per_epoch))
        bw = o.backbone_weights if o.backbone_weights not in (None, "", "none") else None
        keras.utils.set_random_seed(o.seed)  # same initial head weights for the same --seed
        with self.strategy.scope():
            self.model = build_model(self.cfg, backbone_weights=None if state_meta or source else bw)
            if source:
                source.load_into(self.model, self.cfg, log=self.log)
            self.frozen = freeze_layers(self.model, o.freeze_backbone)
            self.tvars = list(self.model.trainable_variables)
            self.optimizer = keras.optimizers.SGD(o.base_lr, momentum=o.momentum)
            self.optimizer.build(self.tvars)
            self.ema = WeightEMA(self.model.weights, o.ema_decay)
            self._warm_start_batchnorm(tf, keras)
        self._tf = tf

    def _warm_start_batchnorm(self, tf, keras):
        """Make trainable BN layers' moving-average momentum a variable, warmed up like the EMA.

        With a fixed 0.99, the moving statistics of the freshly initialised BiFPN/heads still
        carry (0.99 ** 200 =) 13 % of their initial (0, 1) after 200 steps: the inference-mode
        model then scores far below the training-mode one, and a short run's val AP (and the
        final model of a run of a few hundred steps) is badly off. The momentum is set to
        ``min(m, (1 + n) / (10 + n))`` per step ``n`` instead (see :meth:`_set_bn_momentum`).
        """
        self.bn_layers = [layer for layer in self.model.layers
                          if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
        self.bn_max_momentum = max([float(layer.momentum) for layer in self.bn_layers] or [0.99])
        self.bn_momentum = tf.Variable(self.bn_max_momentum, trainable=False, dtype=tf.float32, name="bn_momentum",
                                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        for layer in self.bn_layers:
            # object.__setattr__: not tracked as a layer weight (saved weights stay loadable by
            # a fresh model); tf_keras then uses its unfused tensor-momentum update.
            object.__setattr__(layer, "momentum", self.bn_momentum)

    def _set_bn_momentum(self, step: int) -> None:
        # Imported BN statistics are already right: no warm start that would overwrite them.
        if getattr(self, "bn_layers", None) and not self.opts.init:  # subclasses (QAT) may build without it
            self.bn_momentum.assign(min(self.bn_max_momentum, (1.0 + step) / (10.0 + step)))

    def lr_at(self, step: int) -> float:
        from edgedet.train.schedule import warmup_cosine_lr

        return warmup_cosine_lr(step, self.opts.base_lr, self.epochs * self.steps_per_epoch, self.warmup_steps)

    def _apply_time_limit(self, epochs_done: int, elapsed_s: float, epoch_estimates: list, eval_s: float) -> None:
        """Shorten the run (and its cosine schedule) when the remaining epochs would overrun --time-limit."""
        limit = self.opts.time_limit
        if not limit or epochs_done >= self.epochs:
            return
        fit, per_epoch = plan_epochs(limit, epochs_done, elapsed_s, epoch_estimates, eval_s, self.opts.eval_every)
        if fit < self.epochs:
            self.log(f"--time-limit {limit:g} min: at {per_epoch:.0f} s/epoch only {fit} of {self.epochs} epochs fit; "
                     f"shortening the run (and its cosine schedule) to {fit} epochs")
            self.epochs = max(fit, epochs_done)

    # ---------------------------------------------------------------- state
    def _save_state(self, epoch: int, best: dict):
        arrays = {
            "model": [v.numpy() for v in self.model.weights],
            "optimizer": [v.numpy() for v in self.optimizer.variables],
            "ema": [v.numpy() for v in self.ema.shadow],
        }
        meta = {"epochs_done": epoch, "epochs": self.epochs, "ema_updates": int(self.ema.num_updates.numpy()),
                "best": best, "num_weights": len(self.model.weights), "elapsed_s": round(self.elapsed_s, 1)}
        ckpt.save_state(self.out / ckpt.STATE, arrays, meta)

    def _restore_state(self, arrays: dict):
        def assign(variables, values, what):
            if len(variables) != len(values):
                raise ConfigError(f"{self.out / ckpt.STATE}: {what} has {len(values)} tensors, model expects "
                                  f"{len(variables)} (was the run started with other options?)")
            for v, a in zip(variables, values):
                v.assign(a)

        assign(self.model.weights, arrays["model"], "model")
        assign(self.optimizer.variables, arrays["optimizer"], "optimizer")
        assign(self.ema.shadow, arrays["ema"], "EMA")

    def _write_run_json(self, epochs_done: int, best: dict, status: str):
        o = self.opts
        weights = {}
        if (self.out / ckpt.BEST).exists():
            weights["best"] = ckpt.BEST
        if (self.out / ckpt.LAST).exists():
            weights["last"] = ckpt.LAST
        data = {
            "kind": "float",
            "variant": self.cfg.name,
            "image_size": self.cfg.image_size,
            "num_classes": self.cfg.num_classes,
            "class_names": list(self.dataset.class_names),
            "mean": list(self.cfg.mean),
            "std": list(self.cfg.std),
            "model_config": self.cfg.to_dict(),
            "dataset": str(Path(o.data).resolve()),
            "epochs": self.epochs,
            "epochs_done": epochs_done,
            "status": status,
            "best": best,
            "weights": weights,
            "train": o.to_dict(),
        }
        if weights.get("best"):
            data["weights_sha256"] = ckpt.sha256_file(self.out / ckpt.BEST)
        ckpt.atomic_write_json(self.out / ckpt.RUN_JSON, data)

    def _append_csv(self, row: dict, epochs_done: int):
        path = self.out / "log.csv"
        rows = []
        if path.exists():
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= epochs_done]
        rows.append({k: row.get(k, "") for k in CSV_FIELDS})
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
        w.writeheader()
        w.writerows(rows)
        ckpt.atomic_write_bytes(path, buf.getvalue().encode())

    # ---------------------------------------------------------------- step
    def _make_step(self):
        tf = self._tf
        from edgedet.train.losses import detection_loss, l2_regularisation

        o, model, opt, tvars = self.opts, self.model, self.optimizer, self.tvars
        k, replicas = self.cfg.num_classes, float(self.replicas)

        def replica_fn(images, targets):
            ctx = tf.distribute.get_replica_context()
            cls_t, box_t = targets["cls"], targets["box"]
            local_pos = tf.reduce_sum(tf.cast(cls_t >= 0, tf.float32))
            global_pos = ctx.all_reduce(tf.distribute.ReduceOp.SUM, local_pos)
            with tf.GradientTape() as tape:
                outputs = model(images, training=True)
                losses = detection_loss(outputs, cls_t, box_t, k, label_smoothing=o.label_smoothing,
                                        num_positives=global_pos)
                reg = l2_regularisation(tvars, o.weight_decay) / replicas
                total = losses["loss"] + reg
            grads = tape.gradient(total, tvars)
            grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, tvars)]
            grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
            grads, gnorm = tf.clip_by_global_norm(grads, o.clip_norm)
            opt.apply_gradients(zip(grads, tvars), skip_gradients_aggregation=True)
            return {"loss": total, "cls_loss": losses["cls_loss"], "box_loss": losses["box_loss"]}

        strategy, ema = self.strategy, self.ema

        @tf.function
        def step(images, targets):
            per_replica = strategy.run(replica_fn, args=(images, targets))
            ema.update()
            return {key: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for key, v in per_replica.items()}

        return step

    # ---------------------------------------------------------------- eval
    def evaluate_ema(self) -> dict:
        from edgedet.train.evaluate_keras import evaluate

        if not self.val_samples:
            return {}
        live = self.ema.swap_in()
        try:
            return evaluate(self.model, self.val_samples, self.dataset.class_names, image_size=self.cfg.image_size,
                            mean=self.cfg.mean, std=self.cfg.std, anchor_config=self.cfg.anchor_config,
                            progress=self.opts.progress)
        finally:
            self.ema.swap_out(live)

    # ---------------------------------------------------------------- loop
    def run(self) -> dict:
        o = self.opts
        state_arrays, state_meta = None, None
        if self.resume:
            if (self.out / ckpt.STATE).exists():
                state_arrays, state_meta = ckpt.load_state(self.out / ckpt.STATE)
        elif (self.out / ckpt.RUN_JSON).exists():
            raise ConfigError(f"--out {self.out}: already holds a run (use --resume {self.out} or another --out)")
        self._load_data()
        self.out.mkdir(parents=True, exist_ok=True)
        self._build(state_meta)
        start_epoch, best = 0, {}
        if state_meta:
            self._restore_state(state_arrays)
            self.ema.num_updates.assign(state_meta["ema_updates"])
            start_epoch, best = int(state_meta["epochs_done"]), dict(state_meta.get("best") or {})
            self.log(f"resuming {self.out} after epoch {start_epoch}/{self.epochs}")
        else:
            self.ema.reset()
        self.elapsed_s = float((state_meta or {}).get("elapsed_s", 0.0))
        if start_epoch >= self.epochs:
            self.log(f"{self.out}: all {self.epochs} epochs already done")
            return best
        self._write_run_json(start_epoch, best, "running")
        self.log(f"training {self.cfg.name} {self.cfg.image_size}px on {len(self.train_samples)} images "
                 f"({self.steps_per_epoch} steps/epoch x {self.epochs} epochs, batch {o.batch}, lr {o.base_lr:g}, "
                 f"{self.replicas} replica(s), {self.frozen} frozen layers, val {len(self.val_samples)} images)")
        step_fn = self._make_step()
        tf = self._tf
        writer = tf.summary.create_file_writer(str(self.out / "tb"))
        eval_s, est_history = 0.0, []
        epoch = start_epoch
        batches = self._batch_stream(start_epoch)
        while epoch < self.epochs:
            t0 = time.time()
            row = self._train_epoch(epoch, step_fn, writer, batches)
            metrics = {}
            last = epoch + 1 == self.epochs
            if self.val_samples and ((epoch + 1) % max(o.eval_every, 1) == 0 or last):
                t1 = time.time()
                metrics = self.evaluate_ema()
                eval_s = time.time() - t1
            live = self.ema.swap_in()  # saved weights are the EMA weights (what was evaluated)
            try:
                ckpt.save_weights(self.model, self.out / ckpt.LAST)
                improved = metrics and (not best or metrics["AP"] > best["metrics"]["AP"])
                if improved or not self.val_samples:
                    ckpt.save_weights(self.model, self.out / ckpt.BEST)
                    best = {"epoch": epoch + 1, "metrics": _summary(metrics)}
            finally:
                self.ema.swap_out(live)
            self.elapsed_s += time.time() - t0
            if not last:
                est_history.append(row["est_epoch_s"])
                self._apply_time_limit(epoch + 1, self.elapsed_s, est_history, eval_s)
                last = epoch + 1 >= self.epochs
                if last and not metrics and self.val_samples:  # the limit ended the run here: evaluate now
                    metrics = self.evaluate_ema()
                    live = self.ema.swap_in()
                    try:
                        if not best or metrics["AP"] > best["metrics"]["AP"]:
                            ckpt.save_weights(self.model, self.out / ckpt.BEST)
                            best = {"epoch": epoch + 1, "metrics": _summary(metrics)}
                    finally:
                        self.ema.swap_out(live)
            self._save_state(epoch + 1, best)
            row.update({f"val_{k}": round(metrics[k], 5) for k in ("AP", "AP50", "AP75") if k in metrics})
            self._append_csv(row, epoch)
            self._write_run_json(epoch + 1, best, "done" if last else "running")
            with writer.as_default(step=(epoch + 1) * self.steps_per_epoch):
                for key in ("AP", "AP50", "AP75"):
                    if key in metrics:
                        tf.summary.scalar(f"val/{key}", metrics[key])
            writer.flush()
            from edgedet.train.evaluate_keras import format_metrics

            msg = f"epoch {epoch + 1}/{self.epochs}: loss {row['loss']:.4f} ({row['epoch_s']:.0f}s)"
            if metrics:
                msg += f"  val {format_metrics(metrics)}" + ("  *best*" if best.get("epoch") == epoch + 1 else "")
            self.log(msg)
            epoch += 1
        return best

    def _batch_stream(self, start_epoch: int):
        """One iterator over the batches of epochs ``start_epoch .. self.epochs - 1``.

        Built once per run (see ``make_dataset(epochs=...)``): a fresh pipeline per epoch
        stalled every epoch's first step while it was instantiated and refilled.
        """
        from edgedet.train.input import make_dataset

        o = self.opts
        ds = make_dataset(self.train_samples, image_size=self.cfg.image_size, num_classes=self.cfg.num_classes,
                          mean=self.cfg.mean, std=self.cfg.std, anchor_config=self.cfg.anchor_config,
                          batch_size=o.batch, training=True, seed=o.seed, jitter=o.jitter, flip=o.flip,
                          epochs=range(start_epoch, self.epochs))
        if self.replicas > 1:
            ds = self.strategy.experimental_distribute_dataset(ds)
        return iter(ds)

    def _train_epoch(self, epoch: int, step_fn, writer, batches) -> dict:
        import itertools

        import numpy as np

        o, tf = self.opts, self._tf
        ds = itertools.islice(batches, self.steps_per_epoch)
        bar = None
        if o.progress:
            from tqdm import tqdm

            bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{self.epochs}", unit="step",
                       dynamic_ncols=True, file=sys.stderr)
        t0 = time.time()
        sums = {"loss": 0.0, "cls_loss": 0.0, "box_loss": 0.0}
        n = 0
        lr = self.lr_at(int(self.optimizer.iterations.numpy()))
        step_times, t_step = [], time.time()
        for images, targets in ds:
            lr = self.lr_at(int(self.optimizer.iterations.numpy()))
            self.optimizer.learning_rate.assign(lr)
            self._set_bn_momentum(int(self.optimizer.iterations.numpy()))
            out = step_fn(images, targets)
            vals = {k: float(v.numpy()) for k, v in out.items()}
            gstep = int(self.optimizer.iterations.numpy())
            if not all(math.isfinite(v) for v in vals.values()):
                if bar:
                    bar.close()
                raise TrainingDiverged(
                    f"training diverged: loss is {vals['loss']} at epoch {epoch + 1} step {n + 1} "
                    f"(cls_loss {vals['cls_loss']}, box_loss {vals['box_loss']}, lr {lr:g}); "
                    f"try a lower --lr; last good checkpoint kept in {self.out}")
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
        return {"epoch": epoch + 1, "step": int(self.optimizer.iterations.numpy()), **{k: round(v, 6) for k, v in avg.items()},
                "lr": float(np.float32(lr)),
                "epoch_s": round(time.time() - t0, 1),
                # steady-state epoch time (the first step of a session includes tf.function tracing)
                "est_epoch_s": float(np.mean(step_times[1:] or step_times)) * self.steps_per_epoch}


def plan_epochs(limit_min: float, epochs_done: int, elapsed_s: float, epoch_estimates: list, eval_s: float,
                eval_every: int = 1) -> tuple[int, float]:
    """How many epochs in all fit in ``limit_min`` minutes (``--time-limit``).

    Args:
        limit_min: the wall-clock budget of the whole run, minutes.
        epochs_done: epochs finished so far.
        elapsed_s: seconds spent on them (training, evaluation, checkpoints).
        epoch_estimates: steady-state seconds per epoch of each epoch of this session.
        eval_s: seconds of the last validation (kept free for the final one).
        eval_every: validation every N epochs.

    Returns:
        ``(epochs that fit, seconds per epoch used)``. The estimate is the MEAN over the session's
        epochs, not the last one: a single slow epoch (a stall of the input pipeline or of the
        host) would otherwise cut the cosine schedule for good, since the limit only ever
        shortens a run (measured on the 5-minute synthetic benchmark: one 14 s epoch among 8 s
        ones cut the run from 28 to 18 epochs, test AP50 0.76; planning with the mean: 23
        epochs, 0.86).
    """
    per_epoch = sum(epoch_estimates) / max(len(epoch_estimates), 1) + eval_s / max(eval_every, 1)
    budget = limit_min * 60.0 - elapsed_s - eval_s  # keep time for the final evaluation
    return epochs_done + max(int(budget // max(per_epoch, 1e-6)), 0), per_epoch


def _summary(m: dict) -> dict:
    keys = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    out = {k: float(m[k]) for k in keys if k in m}
    if "per_class" in m:
        out["per_class"] = {k: float(v) for k, v in m["per_class"].items()}
    return out


def train(opts: TrainOptions, resume: bool = False, log=None, epochs: int | None = None) -> dict:
    """Train (or resume) a run; returns the best-epoch record ``{"epoch", "metrics"}``.

    ``epochs`` with ``resume`` changes the run's length (e.g. to train a finished run longer).
    """
    return Trainer(opts, resume=resume, log=log, epochs=epochs).run()


def resume_options(run_dir) -> TrainOptions:
    """The options a run was started with (from its run.json)."""
    data = ckpt.read_run_json(run_dir)
    o = TrainOptions.from_dict(data.get("train") or {})
    o.out = str(run_dir)
    return o


def _default_size(variant: str) -> int | None:
    """The variant's own input side when ``--image-size`` is not given."""
    try:
        from edgedet.model import get_config

        return get_config(variant).image_size
    except Exception:  # an unknown variant fails later with its own message
        return None
