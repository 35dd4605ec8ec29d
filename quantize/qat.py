"""Quantization-aware fine-tuning of a float run (``edgedet quantize qat``).

The float run's model is made quantization-aware (:func:`edgedet.quantize.qat_graph.quantize_model`:
fake-quant on weights and activations exactly where the int8 TFLite graph quantizes) and
fine-tuned with the trainer's own loop (:class:`edgedet.train.trainer.Trainer`: same loss,
SGD, EMA, clipping, checkpoints, resume, evaluation), with a short low-LR schedule:

* activation ranges start from the min/max over up to 300 train images (a PTQ calibration), not
  tfmot's [-6, 6] guess that an EMA of decay 0.999 would take thousands of steps to forget;
* ``epochs`` 5, peak LR = the float run's LR / 10, warm-up 0.1 epoch, cosine decay;
* BatchNorm in inference mode (moving statistics fixed, gamma/beta still learn) unless ``train_bn``: the
  converter folds BN with its *moving* statistics, so training against them means the
  fake-quant sees the folded conv the device will run; small batches also make batch
  statistics noisy;
* augmentation (jitter, flip), seed and batch are the float run's unless overridden.

The result is a run folder like the trainer's (``run.json`` with ``kind: "qat"``,
``source_run``, ``best/last.weights.h5`` of the QAT model, ``state.npz`` for ``--resume``).
:func:`load_qat_model` rebuilds it; ``edgedet.runs.load_run`` delegates here.
"""
from __future__ import annotations

import os
import types
from pathlib import Path

from edgedet.errors import ConfigError, DataError, ModelFileError
from edgedet.train.trainer import TrainOptions, Trainer, freeze_layers, resume_epochs, resume_options

DEFAULT_EPOCHS = 5
LR_FACTOR = 0.1
WARMUP_EPOCHS = 0.1
# Train images (at most) whose min/max initialise the activation ranges: as many as the full preset
# calibrates PTQ with. On BCCD Lite0, 64 images left QAT int8 0.37 AP under its float twin, all 205
# images 0.12 (docs/int8-budget.md).
CALIB_IMAGES = 300


def _require_float(run_dir) -> dict:
    from edgedet.runs import read_run_json

    data = read_run_json(run_dir)
    if data.get("kind", "float") == "qat":
        raise ConfigError(f"--weights {run_dir}: already a QAT run; QAT starts from a float run (its source was "
                          f"{data.get('source_run', 'unknown')})")
    return data


def qat_options(weights: str, out: str, data: str | None = None, epochs: int | None = None, batch: int | None = None,
                lr: float | None = None, freeze_backbone: str | None = None, time_limit: float | None = None,
                seed: int | None = None, progress: bool = True, strategy: str | None = None,
                connect_timeout: float | None = None, mixed_precision: bool = False):
    """TrainOptions for fine-tuning the float run ``weights`` into ``out``.

    Starts from the float run's own training options (augmentation, batch, seed, classes) and
    applies the QAT schedule. ``data`` defaults to the run's dataset; ``freeze_backbone`` to the
    float run's (``"0"`` unfreezes); ``strategy`` to one device, whatever the float run used.
    """
    src = _require_float(weights)
    base = TrainOptions.from_dict({**(src.get("train") or {}), "data": "", "out": ""})
    data = data or src.get("dataset")
    if not data:
        raise ConfigError(f"--weights {weights}: run.json names no dataset; pass --data PATH")
    opts = TrainOptions.from_dict(base.to_dict())
    opts.data, opts.out = str(data), str(out)
    opts.model = src.get("variant", base.model)
    opts.image_size = src.get("image_size", base.image_size)
    opts.epochs = int(epochs or DEFAULT_EPOCHS)
    if batch:
        opts.batch = int(batch)
    opts.lr = float(lr) if lr else base.base_lr * LR_FACTOR
    opts.warmup_epochs = WARMUP_EPOCHS
    # Default: the float run's frozen layers stay frozen. Unfreezing a backbone that the float run
    # never trained (small datasets) cost 0.56 AP on BCCD (Lite0@448: QAT int8 53.86 vs float
    # 54.42); keeping stem + 3 stages frozen gave 54.63. "0"/"none" unfreezes everything.
    spec = base.freeze_backbone if freeze_backbone is None else freeze_backbone
    opts.freeze_backbone = None if str(spec).lower() in ("0", "none", "") else spec
    opts.backbone_weights = None
    opts.init = None  # QAT starts from the float run, never from the checkpoint that run started from
    opts.time_limit = time_limit
    opts.classes = list(src.get("class_names") or []) or None
    if seed is not None:
        opts.seed = int(seed)
    opts.progress = progress
    opts.strategy = strategy or "default"
    opts.mixed_precision = bool(mixed_precision)
    if connect_timeout:
        opts.connect_timeout = float(connect_timeout)
    if opts.epochs < 1 or opts.batch < 1:
        raise ConfigError("--epochs and --batch must be >= 1")
    return opts


def calibration_batches(samples, cfg, count: int | None = None, batch: int = 8, seed: int = 0):
    """Normalised ``(B, S, S, 3)`` batches of a seeded sample of ``samples`` (runtime pre-processing)."""
    import random

    import numpy as np

    from edgedet.runtime.preprocess import letterbox, load_image, normalize

    count = CALIB_IMAGES if count is None else count
    idx = sorted(random.Random(seed).sample(range(len(samples)), min(count, len(samples))))
    size = (cfg.image_size, cfg.image_size)
    for i in range(0, len(idx), batch):
        yield np.stack([normalize(letterbox(load_image(samples[j].image_path), size, cfg.mean)[0], cfg.mean, cfg.std)
                        for j in idx[i:i + batch]]).astype(np.float32)


class QATTrainer(Trainer):
    """The trainer with the model swapped for the QAT version of a float run (always float32)."""

    KIND = "qat"

    def __init__(self, opts, source_run, train_bn: bool = False, resume: bool = False, log=None, epochs: int | None = None):
        super().__init__(opts, resume=resume, log=log, epochs=epochs)
        self.source_run = str(source_run)
        self.train_bn = bool(train_bn)

    def _starting_point(self, best: dict) -> dict:
        """Evaluate the calibrated QAT model before any step, as "epoch 0".

        It is the float weights with post-training ranges (what PTQ ships, in simulation). A later
        epoch replaces it as ``best`` only when its val AP is higher, so fine-tuning that hurts
        (a few noisy steps on a small dataset) leaves the untrained starting point as the result.
        """
        if not self.val_samples:
            return best
        from edgedet.train.evaluate_keras import format_metrics

        metrics = self.evaluate_ema()
        best = self._save_weights(metrics, best, 0, last_too=False)
        self.log(f"before QAT training (calibrated ranges): val {format_metrics(metrics)}")
        return best

    def _load_data(self):
        super()._load_data()
        want = list(self.opts.classes or [])
        if want and list(self.dataset.class_names) != want:
            raise DataError(f"--data {self.opts.data}: classes {list(self.dataset.class_names)} differ from the "
                            f"float run's {want}")

    def _build(self, state_meta):
        import tensorflow as tf
        import tf_keras as keras

        from edgedet.quantize.qat_graph import calibrate_ranges, quantize_model
        from edgedet.runs import load_run
        from edgedet.train.schedule import WeightEMA

        o = self.opts
        _require_float(self.source_run)
        if o.mixed_precision:
            # Fake-quant ranges and the int8 grid they model need float32 arithmetic.
            self.log("--mixed-precision: QAT trains in float32 (fake-quant ranges need float32)")
        self.mixed = False
        strategy = self._make_strategy()
        self._schedule(state_meta)
        keras.utils.set_random_seed(o.seed)
        with strategy.scope():
            float_model, info = load_run(self.source_run)
            self.cfg = info.config
            self.source_info = info
            self.model = quantize_model(float_model)
            del float_model
            if not state_meta:  # a fresh run: start from calibrated (PTQ-like) ranges, not [-6, 6]
                n = calibrate_ranges(self.model, calibration_batches(self.train_samples, self.cfg, seed=o.seed))
                self.log(f"QAT: {n} quantizer ranges calibrated on {min(CALIB_IMAGES, len(self.train_samples))} "
                         f"train images")
            inner = [getattr(layer, "layer", layer) for layer in self.model.layers]
            self.frozen = freeze_layers(types.SimpleNamespace(layers=inner), o.freeze_backbone)
            # tfmot's wrapper keeps listing a frozen layer's weights as trainable: drop them here.
            frozen = {id(v) for layer in inner if not layer.trainable for v in layer.weights}
            if not self.train_bn:
                for layer in inner:
                    if isinstance(layer, keras.layers.BatchNormalization):
                        # Inference-mode BN: the moving statistics the converter folds stay fixed
                        # (gamma/beta still learn).
                        layer.trainable = False
            self.tvars = [v for v in self.model.trainable_variables if id(v) not in frozen]
            self.optimizer = self._optimizer(keras)
            # tfmot's integer step counters cannot be averaged; EMA the float variables only.
            self.ema = WeightEMA([w for w in self.model.weights if w.dtype.is_floating], o.ema_decay)
        self._tf = tf

    def _run_extra(self) -> dict:
        """run.json says "qat" from its first write on: a kill at any point leaves a QAT run."""
        info = self.source_info
        return {
            "kind": self.KIND,
            "source_run": os.path.abspath(self.source_run),
            "source_weights_sha256": info.weights_sha256,
            "source_metrics": dict(info.metrics or {}),
            "qat": {"train_bn": self.train_bn, "lr_factor": LR_FACTOR, "scheme": "tfmot default 8-bit"},
        }


def qat(weights: str, out: str, data: str | None = None, epochs: int | None = None, batch: int | None = None,
        lr: float | None = None, train_bn: bool = False, freeze_backbone: str | None = None,
        time_limit: float | None = None, seed: int | None = None, progress: bool = True, log=None,
        strategy: str | None = None, connect_timeout: float | None = None, mixed_precision: bool = False) -> dict:
    """Fine-tune float run ``weights`` with QAT into the new run folder ``out``.

    Returns:
        The best-epoch record ``{"epoch", "metrics"}`` (val metrics of the QAT Keras model).

    Raises:
        ConfigError: ``weights`` is already a QAT run, ``out`` already holds a run, bad options.
    """
    opts = qat_options(weights, out, data, epochs, batch, lr, freeze_backbone, time_limit, seed, progress,
                       strategy, connect_timeout, mixed_precision)
    return QATTrainer(opts, weights, train_bn=train_bn, log=log).run()


def resume_qat(run_dir: str, progress: bool = True, log=None, connect_timeout: float | None = None,
               epochs: int | None = None) -> dict:
    """Continue an interrupted ``qat`` run (everything from its run.json; ``epochs``: a new total)."""
    from edgedet.runs import read_run_json

    data = read_run_json(run_dir)
    if data.get("kind") != "qat":
        raise ConfigError(f"--resume {run_dir}: not a QAT run (use `edgedet train --resume` for float runs)")
    opts = resume_options(run_dir)
    opts.progress = progress
    if connect_timeout:
        opts.connect_timeout = float(connect_timeout)
    train_bn = bool((data.get("qat") or {}).get("train_bn", False))
    return QATTrainer(opts, data["source_run"], train_bn=train_bn, resume=True, log=log,
                      epochs=resume_epochs(run_dir, epochs)).run()


def load_qat_model(run_dir, which: str = "best"):
    """Rebuild a QAT run's model with its weights (what ``load_run`` returns for kind "qat").

    Returns:
        ``(qat_model, RunInfo)``; the model takes normalised ``(B, S, S, 3)`` input and has the
        10 raw outputs (layer names ``quant_class_p3`` ...).
    """
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from edgedet.model import build_model
    from edgedet.model.config import ModelConfig
    from edgedet.quantize.qat_graph import quantize_model
    from edgedet.runs import BEST, LAST, RUN_JSON, RunInfo, read_run_json, sha256_file

    run_dir = Path(run_dir)
    data = read_run_json(run_dir)
    try:
        cfg = ModelConfig.from_dict(data["model_config"])
    except (KeyError, TypeError) as exc:
        raise ModelFileError(f"{run_dir / RUN_JSON}: no valid model_config ({exc})") from exc
    weights = run_dir / ((data.get("weights") or {}).get(which) or (BEST if which == "best" else LAST))
    if not weights.is_file():
        raise ModelFileError(f"{weights}: weights file missing")
    model = quantize_model(build_model(cfg))
    try:
        try:
            model.load_weights(str(weights))
        except ValueError as exc:
            # QAT runs saved when nearest upsampling still had an output fake-quant of its own:
            # those layers held only that range (now taken from their input), so everything
            # else loads by name.
            if "_up" not in str(exc) or "optimizer_step" not in str(exc):
                raise
            import warnings

            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*Skipping object.*_up")
                model.load_weights(str(weights), by_name=True, skip_mismatch=True)
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{weights}: cannot load QAT weights ({str(exc).splitlines()[0] if str(exc) else exc})") from exc
    info = RunInfo(run_dir=run_dir, config=cfg, class_names=list(data.get("class_names", [])),
                   metrics=dict((data.get("best") or {}).get("metrics", {})), kind="qat",
                   weights_path=weights, weights_sha256=sha256_file(weights), data=data)
    return model, info
