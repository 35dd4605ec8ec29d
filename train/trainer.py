"""Custom training loop: SGD + momentum, warm-up/cosine LR, EMA, clipping, tf.distribute, resume.

The step and the epoch are in :mod:`edgedet.train.loop`, the run folder's files in
:mod:`edgedet.train.records`, the strategies in :mod:`edgedet.train.distribute`. After each epoch
the EMA weights are evaluated on the val split (COCO AP through the runtime's pre/post-processing),
written as ``last`` (and ``best`` when the val AP improved), and the full resumable state is
saved, all atomically (see :mod:`edgedet.runs`).

Several workers (``--strategy multiworker``): every worker trains on its slice of every global
batch and runs the same end of epoch (evaluation, checkpoints: reading the replica-averaged BatchNorm
statistics is a collective operation all must join), the chief into the run folder, the others into
a scratch folder removed at the end. The chief reads the resumable state and broadcasts it, with
the epoch counters, so a worker with no copy of the run folder resumes in step.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from edgedet import runs as ckpt
from edgedet.errors import ConfigError, EdgedetError
from edgedet.train.loop import TrainingDiverged, make_step, train_epoch  # noqa: F401 (re-exported)
from edgedet.train.options import TrainOptions, freeze_layers  # noqa: F401 (re-exported)
from edgedet.train.records import RunFiles

_RERUN_IGNORES = ("progress", "out", "connect_timeout")  # options a re-run of a multi-worker command may change


class ClusterLost(EdgedetError):
    """A worker of a multi-worker run stopped; the chief's last checkpoint is kept.

    The process ends right after the line: a normal exit waits in TensorFlow's shutdown barrier
    for the dead worker (1.5-2 min measured), and everything worth keeping is already written.
    """

    exit_now = True


class Trainer(RunFiles):
    """Builds everything for one run and trains it. See :func:`train`."""

    KIND = "float"  # run.json's "kind" of the runs this trainer makes

    def __init__(self, opts: TrainOptions, resume: bool = False, log=None, epochs: int | None = None):
        self.opts, self.resume, self.epochs_override = opts, resume, epochs
        self.out = Path(opts.out)
        self.log = log or (lambda m: print(m, file=sys.stderr, flush=True))
        self.strategy = None
        self.role = None

    # ---------------------------------------------------------------- setup
    def _load_data(self):
        from edgedet.errors import DataError
        from edgedet.train.check import load_checked

        o = self.opts
        ds = load_checked(o.data, o.check_policy, classes=o.classes, log=self.log)
        from edgedet.train.stats import training_warnings

        for line in training_warnings(ds, o.image_size or _default_size(o.model)):
            self.log(f"warning: {line}")
        train = ds.splits.get("train") or []
        if not train:
            raise DataError(f"{o.data}: the train split is empty (no images to train on)")
        self.dataset = ds
        self.train_samples = train
        self.val_samples = list(ds.splits.get("val") or [])

    def _make_strategy(self):
        """Create the strategy once (joining the cluster for multiworker); check the batch splits evenly."""
        if self.strategy is None:
            from edgedet.train.distribute import make_strategy

            o = self.opts
            self.strategy = make_strategy(o.strategy, o.connect_timeout)
            self.replicas = self.strategy.num_replicas_in_sync
            if o.batch % self.replicas:
                raise ConfigError(f"--batch {o.batch} is not divisible by the {self.replicas} replicas")
            if self.replicas > 1 and len(self.train_samples) < o.batch:
                raise ConfigError(f"--batch {o.batch}: more than the {len(self.train_samples)} train images "
                                  f"({self.replicas} replicas need whole global batches)")
        return self.strategy

    def _schedule(self, state_meta: dict | None):
        from edgedet.train.input import steps_per_epoch

        o = self.opts
        self.steps_per_epoch = steps_per_epoch(len(self.train_samples), o.batch)
        # --time-limit may have shortened the run; `--resume RUN --epochs N` sets a new length
        self.epochs = int(self.epochs_override or (state_meta or {}).get("epochs", o.epochs))
        self.warmup_steps = int(round(o.warmup_epochs * self.steps_per_epoch))

    def _optimizer(self, keras):
        opt = keras.optimizers.SGD(self.opts.base_lr, momentum=self.opts.momentum)
        if self.mixed:
            opt = keras.mixed_precision.LossScaleOptimizer(opt)
        opt.build(self.tvars)
        return opt

    def _build(self, state_meta: dict | None):
        import tensorflow as tf
        import tf_keras as keras

        from edgedet.model import build_model, get_config
        from edgedet.train.distribute import set_mixed_precision
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
        strategy = self._make_strategy()
        self._schedule(state_meta)
        bw = o.backbone_weights if o.backbone_weights not in (None, "", "none") else None
        self.mixed = set_mixed_precision(o.mixed_precision, self.log)
        keras.utils.set_random_seed(o.seed)  # same initial head weights for the same --seed
        try:
            with strategy.scope():
                self.model = build_model(self.cfg, backbone_weights=None if state_meta or source else bw)
                if source:
                    source.load_into(self.model, self.cfg, log=self.log)
                self.frozen = freeze_layers(self.model, o.freeze_backbone)
                self.tvars = list(self.model.trainable_variables)
                self.optimizer = self._optimizer(keras)
                self.ema = WeightEMA(self.model.weights, o.ema_decay)
                self._warm_start_batchnorm(tf, keras)
        finally:
            set_mixed_precision(False)  # the policy is global: later models (evaluation, export) are float32
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
        from edgedet.train.schedule import plan_epochs

        fit, per_epoch = plan_epochs(limit, epochs_done, elapsed_s, epoch_estimates, eval_s, self.opts.eval_every)
        if fit < self.epochs:
            self.log(f"--time-limit {limit:g} min: at {per_epoch:.0f} s/epoch only {fit} of {self.epochs} epochs fit; "
                     f"shortening the run (and its cosine schedule) to {fit} epochs")
            self.epochs = max(fit, epochs_done)

    # ---------------------------------------------------------------- start / resume
    def _read_start(self):
        """``(state arrays, state meta)`` to resume from, or ``(None, None)``; the chief alone reads them."""
        if not self.role.is_chief:
            return None, None
        existing = self.out / ckpt.RUN_JSON
        if not self.resume and existing.exists():
            if self.opts.strategy != "multiworker":
                kind = ckpt.read_run_json(self.out).get("kind", "float")
                hint = f"use --resume {self.out} or another --out" if kind == self.KIND else f"a {kind} run: give another --out"
                raise ConfigError(f"--out {self.out}: already holds a run ({hint})")
            # A multi-worker command is re-run as it was after a worker stopped: continue the run.
            was = {k: v for k, v in (ckpt.read_run_json(self.out).get("train") or {}).items() if k not in _RERUN_IGNORES}
            now = {k: v for k, v in json.loads(json.dumps(self.opts.to_dict())).items() if k not in _RERUN_IGNORES}
            if was != now:
                diff = sorted(k for k in set(was) | set(now) if was.get(k) != now.get(k))
                raise ConfigError(f"--out {self.out}: holds a run started with other options ({', '.join(diff)}); "
                                  "re-run the same command to continue it, or use another --out")
            self.resume = True
        if self.resume:
            from edgedet.files import sweep_stale_temps

            sweep_stale_temps(self.out)  # a kill during a save left its half-written copy
        if self.resume and (self.out / ckpt.STATE).exists():
            return ckpt.load_state(self.out / ckpt.STATE)
        return None, None

    def _share_start(self, state_meta: dict | None) -> dict | None:
        """Every worker learns from the chief whether and where the run resumes (a no-op for one worker)."""
        import numpy as np

        from edgedet.train.distribute import broadcast_from_chief

        if self.role.num_workers <= 1:
            return state_meta
        m = state_meta or {}
        vec = np.array([1.0 if state_meta else 0.0, m.get("epochs_done", 0), m.get("epochs", 0),
                        m.get("ema_updates", 0), m.get("elapsed_s", 0.0)], np.float64)
        has, done, epochs, updates, elapsed = broadcast_from_chief(self._make_strategy(), self.role, [vec])[0]
        if self.role.is_chief or not has:
            return state_meta
        return {"epochs_done": int(done), "epochs": int(epochs), "ema_updates": int(updates), "elapsed_s": elapsed,
                "best": {}}

    def _sync_from_chief(self) -> None:
        """Every worker starts from the chief's variables (fresh or restored)."""
        from edgedet.train.distribute import broadcast_from_chief

        if self.role.num_workers <= 1:
            return
        variables = [v for vs in self._state_arrays().values() for v in vs] + [self.ema.num_updates]
        for v, a in zip(variables, broadcast_from_chief(self.strategy, self.role, [v.numpy() for v in variables])):
            v.assign(a)

    def _agree(self, value):
        """The chief's ``value`` (a number or bool) on every worker: decisions that must not diverge."""
        import numpy as np

        from edgedet.train.distribute import broadcast_from_chief

        if self.role is None or self.role.num_workers <= 1:
            return value
        got = broadcast_from_chief(self.strategy, self.role, [np.array([value], np.float64)])[0][0]
        return type(value)(got)

    def _agree_epochs(self) -> None:
        """The chief's epoch count (``--time-limit`` may shorten it) for every worker."""
        self.epochs = self._agree(int(self.epochs))

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
        from edgedet.train.distribute import Role, cluster_error_reason

        self.role = Role.for_strategy(self.opts.strategy, self.out)
        self.out = self.role.out  # the run folder, or this worker's scratch folder
        try:
            return self._run()
        except EdgedetError:
            raise
        except Exception as exc:
            if self.role.num_workers > 1 and type(exc).__module__.startswith("tensorflow"):
                raise ClusterLost(f"worker {self.role.worker}: the cluster lost a worker ({cluster_error_reason(exc)}); "
                                  "re-run the same command on every worker to continue from the chief's last "
                                  "checkpoint") from None
            raise
        finally:
            self.role.close()

    def _run(self) -> dict:
        o = self.opts
        state_arrays, state_meta = self._read_start()
        self._load_data()
        self.out.mkdir(parents=True, exist_ok=True)
        if o.strategy == "multiworker":
            self._make_strategy()  # join the cluster before anything is built
        state_meta = self._share_start(state_meta)
        self._build(state_meta)
        start_epoch, best = 0, {}
        if state_meta:
            if state_arrays is not None:
                self._restore_state(state_arrays)
            self.ema.num_updates.assign(state_meta["ema_updates"])
            start_epoch, best = int(state_meta["epochs_done"]), dict(state_meta.get("best") or {})
            self.log(f"resuming {self.out} after epoch {start_epoch}/{self.epochs}")
        else:
            self.ema.reset()
        self._sync_from_chief()
        self.elapsed_s = float((state_meta or {}).get("elapsed_s", 0.0))
        if start_epoch >= self.epochs:
            self.log(f"{self.out}: all {self.epochs} epochs already done")
            self._write_run_json(start_epoch, best, "done")  # a killed run's "running" ends here
            return best
        self._write_run_json(start_epoch, best, "running")
        where = f", worker {self.role.worker} of {self.role.num_workers}" if self.role.num_workers > 1 else ""
        self.log(f"training {self.cfg.name} {self.cfg.image_size}px on {len(self.train_samples)} images "
                 f"({self.steps_per_epoch} steps/epoch x {self.epochs} epochs, batch {o.batch}, lr {o.base_lr:g}, "
                 f"{self.replicas} replica(s){where}, {self.frozen} frozen layers, val {len(self.val_samples)} images)")
        if start_epoch == 0:
            best = self._starting_point(best)
        return self._epochs(start_epoch, best)

    def _starting_point(self, best: dict) -> dict:
        """Before the first epoch of a fresh run: the ``best`` record to start from (none here)."""
        return best

    def _epochs(self, epoch: int, best: dict) -> dict:
        tf = self._tf
        step_fn = make_step(self)
        writer = tf.summary.create_file_writer(str(self.role.out / "tb"))
        self._eval_s, self._estimates = 0.0, []
        batches = self._batch_stream(epoch)
        try:
            return self._epoch_loop(epoch, best, step_fn, writer, batches)
        except KeyboardInterrupt:
            # run.json says so (not "running"); the last finished epoch's state stays for --resume
            done = ckpt.read_run_json(self.out) if (self.out / ckpt.RUN_JSON).exists() else {}
            self._write_run_json(int(done.get("epochs_done", epoch)), dict(done.get("best") or best), "interrupted")
            raise

    def _epoch_loop(self, epoch: int, best: dict, step_fn, writer, batches) -> dict:
        tf = self._tf
        while epoch < self.epochs:
            t0 = time.time()
            row = train_epoch(self, epoch, step_fn, writer, batches)
            metrics, best = self._end_epoch(epoch, row, best, t0)
            last = epoch + 1 >= self.epochs
            self._save_state(epoch + 1, best)
            row.update({f"val_{k}": round(metrics[k], 5) for k in ("AP", "AP50", "AP75") if k in metrics})
            self._append_csv(row, epoch)
            self._write_run_json(epoch + 1, best, "done" if last else "running")
            with writer.as_default(step=(epoch + 1) * self.steps_per_epoch):
                for key in ("AP", "AP50", "AP75"):
                    if key in metrics:
                        tf.summary.scalar(f"val/{key}", metrics[key])
            writer.flush()
            self.log(self._epoch_message(epoch, row, metrics, best))
            epoch += 1
        return best

    def _end_epoch(self, epoch: int, row: dict, best: dict, t0: float):
        """Evaluate, write weights, apply --time-limit. Returns ``(metrics, best)``.

        Every worker does it (the others into their scratch folders): reading the BatchNorm
        statistics, which are averaged over the replicas, is a collective operation that every
        worker must join. Where ``--time-limit`` is set, the chief's epoch count is the one kept.
        """
        o = self.opts
        metrics = {}
        last = epoch + 1 == self.epochs
        if self.val_samples and ((epoch + 1) % max(o.eval_every, 1) == 0 or last):
            t1 = time.time()
            metrics = self.evaluate_ema()
            self._eval_s = time.time() - t1
        best = self._save_weights(metrics, best, epoch + 1)
        self.elapsed_s += time.time() - t0
        if not last:
            self._estimates.append(row["est_epoch_s"])
            self._apply_time_limit(epoch + 1, self.elapsed_s, self._estimates, self._eval_s)
            self._agree_epochs()
            if epoch + 1 >= self.epochs and not metrics and self.val_samples:  # the limit ended the run here
                metrics = self.evaluate_ema()
                best = self._save_weights(metrics, best, epoch + 1, last_too=False)
        return metrics, best

    def _epoch_message(self, epoch: int, row: dict, metrics: dict, best: dict) -> str:
        from edgedet.train.evaluate_keras import format_metrics

        per_device = row["images_per_s"] / max(self.replicas, 1)
        msg = (f"epoch {epoch + 1}/{self.epochs}: loss {row['loss']:.4f} ({row['epoch_s']:.0f}s, "
               f"{row['images_per_s']:.1f} img/s, {per_device:.1f} per device, {row['step_s']:.3f} s/step)")
        if metrics:
            msg += f"  val {format_metrics(metrics)}" + ("  *best*" if best.get("epoch") == epoch + 1 else "")
        return msg

    def _batch_stream(self, start_epoch: int):
        """One iterator over the batches of epochs ``start_epoch .. self.epochs - 1``.

        Built once per run (see ``make_dataset(epochs=...)``): a fresh pipeline per epoch
        stalled every epoch's first step while it was instantiated and refilled. With several
        workers, each builds its own slice of every global batch (``shard``): the union over the
        workers of step ``k`` is the single-process batch ``k``.
        """
        from edgedet.train.input import make_dataset

        o = self.opts
        kw = dict(image_size=self.cfg.image_size, num_classes=self.cfg.num_classes, mean=self.cfg.mean,
                  std=self.cfg.std, anchor_config=self.cfg.anchor_config, batch_size=o.batch, training=True,
                  seed=o.seed, jitter=o.jitter, flip=o.flip, epochs=range(start_epoch, self.epochs))
        if self.role.num_workers > 1:
            def per_worker(ctx):
                return make_dataset(self.train_samples, shard=(ctx.num_input_pipelines, ctx.input_pipeline_id),
                                    replica_batch=ctx.get_per_replica_batch_size(o.batch), **kw)

            # Endless (the islice per epoch bounds it): with a finite dataset every worker's every
            # batch would first all-reduce whether the others still have data.
            return iter(self.strategy.distribute_datasets_from_function(lambda ctx: per_worker(ctx).repeat()))
        ds = make_dataset(self.train_samples, **kw)
        if self.replicas > 1:
            ds = self.strategy.experimental_distribute_dataset(ds)
        return iter(ds)


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
    if o.data and not os.path.exists(o.data) and data.get("dataset") and os.path.exists(data["dataset"]):
        o.data = data["dataset"]  # a relative --data from another working folder: its resolved path
    return o


def resume_epochs(run_dir, epochs: int | None) -> int | None:
    """The total a resumed run trains to: the one given, else the last one asked for (run.json is
    rewritten when a resume asks for more, so a killed extension is not forgotten)."""
    return epochs or ckpt.read_run_json(run_dir).get("epochs")


def _default_size(variant: str) -> int | None:
    """The variant's own input side when ``--image-size`` is not given."""
    try:
        from edgedet.model import get_config

        return get_config(variant).image_size
    except Exception:  # an unknown variant fails later with its own message
        return None
