"""In-process tf_keras backend: runs the float model through the same Detector pipeline.

Used for float baselines (``edgedet validate --baseline RUN``), so the baseline and every
exported file share pre-processing, post-processing and evaluation exactly. Imports TensorFlow,
so it is never used on a device; :func:`edgedet.runtime.detector.Detector.from_keras` builds it.
"""
from __future__ import annotations

import numpy as np

from edgedet.runtime.backends.base import Backend, TensorSpec


class KerasBackend(Backend):
    """Wraps a tf_keras model with input ``(B, S, S, 3)`` normalised float32 and a list of outputs.

    Args:
        model: the tf_keras model (outputs ``class_p3..box_p7``).
        names: output names in model order (default: ``model.output_names`` without ``quant_``).
    """

    name = "keras"

    def __init__(self, model, names=None):
        import tensorflow as tf  # noqa: PLC0415

        self.model, self.version, self.device = model, tf.__version__, "CPU"
        shape = tuple(-1 if d is None else int(d) for d in model.inputs[0].shape)
        self.inputs = [TensorSpec("images", shape, np.dtype(np.float32))]
        names = names or [n[len("quant_"):] if n.startswith("quant_") else n for n in model.output_names]
        self.outputs = [TensorSpec(n, tuple(-1 if d is None else int(d) for d in o.shape), np.dtype(np.float32))
                        for n, o in zip(names, model.outputs)]
        # one traced graph, no retracing per call (predict_on_batch would rebuild per shape)
        self._fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        outs = self._fn(x)
        if not isinstance(outs, (list, tuple)):
            outs = [outs]
        return [np.asarray(o) for o in outs]
