"""In-process tf_keras backend: runs a float model through the runtime's :class:`Detector`.

``edgedet eval`` (:func:`edgedet.train.evaluate_keras.predict`) and ``edgedet validate``'s float
baseline both run a Keras model this way, so they share pre-processing, decoding and NMS with
every exported file. It imports TensorFlow, so it lives with the model, never on a device.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from edgedet.runtime.backends.base import Backend, TensorSpec


class KerasBackend(Backend):
    """Wraps a tf_keras model with input ``(B, S, S, 3)`` normalised float32 and a list of outputs.

    The batch dimension is dynamic, so :meth:`Detector.detect_batch` runs a whole batch per call.

    Args:
        model: the tf_keras model (outputs ``class_p3..box_p7``, each ``(B, H_L, W_L, C)``).
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
        # One traced graph per model, kept on the model: training evaluates every epoch and a
        # retrace each time costs seconds (predict_on_batch would also rebuild per shape).
        fn = getattr(model, "_edgedet_predict_fn", None)
        if fn is None:
            fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
            model._edgedet_predict_fn = fn
        self._fn = fn

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """``(B, S, S, 3)`` float32 -> outputs in ``self.outputs`` order, each ``(B, H_L, W_L, C)``."""
        outs = self._fn(x)
        if not isinstance(outs, (list, tuple)):
            outs = [outs]
        return [np.asarray(o) for o in outs]


def keras_detector(model, meta, **post):
    """``model`` as a :class:`~edgedet.runtime.detector.Detector` (float baseline, ``edgedet eval``).

    Args:
        model: tf_keras model; input normalised ``(B, S, S, 3)``; outputs ``class_p3..box_p7``.
        meta: its :class:`~edgedet.runtime.metadata.ModelMeta` (labels, input size, mean/std, anchors).
        **post: post-processing settings (score_threshold, iou_threshold, max_detections, nms, soft ...).
    """
    from edgedet.runtime.detector import Detector  # noqa: PLC0415

    backend = KerasBackend(model, meta.output_names or None)
    if not meta.output_names:  # the model's own names, in its class_p3..p7, box_p3..p7 order
        meta = dataclasses.replace(meta, output_names=[o.name for o in backend.outputs])
    return Detector(backend, meta, path=meta.model or "keras", **post)
