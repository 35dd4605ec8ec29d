"""The float baseline from a training run (imports TensorFlow; used only inside a validate worker).

Both run the model as a :class:`~edgedet.runtime.detector.Detector` on the Keras backend
(:func:`edgedet.model.keras_backend.keras_detector`), the code path every exported file takes:

* accuracy: :func:`edgedet.train.evaluate_keras.predict`, the very function ``edgedet eval`` uses
  (batches of 8, same settings), so the baseline's AP in the report equals ``edgedet eval``'s
  for the same weights exactly;
* latency and raw outputs: the same Detector, one image per call, like every exported file.
"""
from __future__ import annotations

import os
from types import SimpleNamespace


def run_class_names(run_dir: str) -> list[str] | None:
    """Class names from ``run.json`` (no TensorFlow needed)."""
    from edgedet.runs import read_run_json

    names = read_run_json(run_dir).get("class_names")
    return list(names) if names else None


def run_weights_file(run_dir: str) -> str | None:
    """The weights the baseline loads (``best.weights.h5`` else ``last.weights.h5``), or None."""
    for name in ("best.weights.h5", "last.weights.h5"):
        p = os.path.join(run_dir, name)
        if os.path.exists(p):
            return p
    return None


def run_weights_size(run_dir: str) -> int | None:
    """Size of the weights the baseline loads."""
    p = run_weights_file(run_dir)
    return os.path.getsize(p) if p else None


def load_baseline(run_dir: str, twin: bool = False):
    """``(model, info, meta)`` for a training run; ``meta`` describes it like an exported file's metadata.

    ``twin``: a QAT run's float twin (its weights without fake quantization, :mod:`edgedet.quantize.twin`).
    """
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from edgedet.runtime.metadata import ModelMeta
    from edgedet.runs import load_run

    if twin:
        from edgedet.quantize.twin import load_twin

        model, info = load_twin(run_dir)
    else:
        model, info = load_run(run_dir)
    cfg = info.config
    macs = None
    try:
        from edgedet.model import count_macs

        macs = int(count_macs(model))
    except Exception:  # noqa: BLE001 - MACs only feed the GMAC/s column
        pass
    meta = ModelMeta(
        labels=list(info.class_names), input_size=(int(cfg.image_size), int(cfg.image_size)),
        mean=tuple(cfg.mean), std=tuple(cfg.std), anchors=cfg.anchor_config.to_dict(), outputs="raw",
        model=cfg.name, target="keras", source_sha256=getattr(info, "weights_sha256", "") or "", macs=macs,
        quantization={"method": "qat" if getattr(info, "kind", "float") == "qat" and not twin else "none"},
    )
    return model, info, meta


def keras_detector(model, meta, **post):
    """The baseline as a :class:`Detector` (timed path)."""
    from edgedet.model.keras_backend import keras_detector as build

    return build(model, meta, **post)


def eval_detections(model, info, image_paths: list[str], eval_post: dict) -> list:
    """Detections for accuracy, exactly as ``edgedet eval`` computes them (its defaults: batch 8)."""
    from edgedet.train.evaluate_keras import predict

    cfg = info.config
    samples = [SimpleNamespace(image_path=p) for p in image_paths]
    return predict(model, samples, image_size=cfg.image_size, mean=cfg.mean, std=cfg.std,
                   anchor_config=cfg.anchor_config, class_names=info.class_names, batch_size=8,
                   score_threshold=eval_post["score_threshold"], iou_threshold=eval_post["iou_threshold"],
                   max_detections=eval_post["max_detections"])
