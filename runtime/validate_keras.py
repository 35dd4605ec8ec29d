"""The float baseline from a training run, through the runtime's own Detector.

A Keras model is wrapped as one more :class:`~edgedet.runtime.backends.base.Backend`, so the float
baseline gets exactly the pre-processing (letterbox, normalisation) and post-processing (decode,
NMS) that every exported file gets; only the invoke differs. TensorFlow is imported inside these
functions (the validate worker process), never by ``import edgedet.runtime``.
"""
from __future__ import annotations

import os

import numpy as np

from edgedet.runtime.backends.base import Backend, TensorSpec


class KerasBackend(Backend):
    """Runs a tf_keras detection model on a normalised ``(1, S, S, 3)`` float32 input.

    Outputs are returned in the model's output order, named ``class_p3..box_p7`` when the model
    names them that way (edgedet models do), so the Detector maps them by name.
    """

    name = "keras"
    delegate = None

    def __init__(self, model, image_size: tuple[int, int]):
        import tensorflow as tf

        self.model = model
        self.version = f"tf_keras on tensorflow {tf.__version__}"
        self.device = "CPU"
        self.threads = None
        h, w = image_size
        self.inputs = [TensorSpec("input", (1, h, w, 3), np.dtype(np.float32))]
        # Graph mode: an eager call per image would time Python dispatch, not the model.
        self._fn = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)
        probe = self.run(np.zeros((1, h, w, 3), np.float32))
        names = [n.split("/")[0].split(":")[0] for n in self.model.output_names]
        self.outputs = [TensorSpec(n, tuple(o.shape), np.dtype(o.dtype)) for n, o in zip(names, probe)]

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        outs = self._fn(x)
        if isinstance(outs, dict):
            outs = [outs[n] for n in self.model.output_names]
        if not isinstance(outs, (list, tuple)):
            outs = [outs]
        return [o.numpy() for o in outs]


def run_weights_size(run_dir: str) -> int | None:
    """Size of the weights the baseline loads (``best.weights.h5`` else ``last.weights.h5``)."""
    for name in ("best.weights.h5", "last.weights.h5"):
        p = os.path.join(run_dir, name)
        if os.path.exists(p):
            return os.path.getsize(p)
    return None


def keras_detector(run_dir: str, **post):
    """A :class:`Detector` that runs a training run's best weights in Keras.

    Args:
        run_dir: a training run folder (``run.json`` + weights), see ``edgedet.train.checkpoint``.
        **post: post-processing settings for the Detector.
    """
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from edgedet.runtime.detector import Detector
    from edgedet.runtime.metadata import ModelMeta
    from edgedet.train.checkpoint import load_run

    model, info = load_run(run_dir)
    cfg = info.config
    size = (int(cfg.image_size), int(cfg.image_size))
    macs = None
    try:
        from edgedet.model import count_macs

        macs = int(count_macs(model))
    except Exception:  # noqa: BLE001 - MACs are a nice-to-have for the GMAC/s column
        pass
    weights = getattr(info, "weights_sha256", "") or ""
    meta = ModelMeta(
        labels=list(info.class_names), input_size=size, mean=tuple(cfg.mean), std=tuple(cfg.std),
        anchors=cfg.anchor_config.to_dict(), outputs="raw", model=cfg.name, target="keras",
        quantization={"method": "qat" if getattr(info, "kind", "float") == "qat" else "none"},
        source_sha256=weights, macs=macs,
    )
    backend = KerasBackend(model, size)
    meta.output_names = [s.name for s in backend.outputs]
    return Detector(backend, meta, path=run_dir, **post)
