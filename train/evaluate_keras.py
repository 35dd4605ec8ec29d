"""COCO evaluation of a Keras (float) model, through the runtime's own pre/post-processing.

The model runs as a runtime :class:`~edgedet.runtime.detector.Detector` on the Keras backend
(:mod:`edgedet.model.keras_backend`): the on-device pre-processing (Pillow letterbox), numpy
decode + NMS, then :func:`edgedet.runtime.report.evaluate.coco_evaluate`. So ``edgedet eval``
here and ``edgedet validate``'s float baseline agree exactly.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from edgedet.runtime.report.evaluate import EVAL_POSTPROCESS

EVAL_SCORE_THRESHOLD = EVAL_POSTPROCESS["score_threshold"]


def eval_meta(*, image_size: int, mean, std, anchor_config, class_names=()):
    """The :class:`~edgedet.runtime.metadata.ModelMeta` of an in-memory float model, as an exported
    file of it would carry (letterbox to ``image_size``, ``(pixel - mean) / std``, raw outputs)."""
    from edgedet.runtime.metadata import ModelMeta

    return ModelMeta(labels=list(class_names), input_size=(int(image_size), int(image_size)), mean=tuple(mean),
                     std=tuple(std), anchors=anchor_config.to_dict(), outputs="raw", target="keras")


def predict(model, samples, *, image_size: int, mean, std, anchor_config, class_names=(), batch_size: int = 8,
            score_threshold: float = EVAL_SCORE_THRESHOLD, iou_threshold: float = 0.5, soft_nms: bool = False,
            max_detections: int = 100, progress: bool = False) -> list:
    """Run the model on samples and return one :class:`Detections` per sample (original pixels).

    The model runs as a runtime :class:`~edgedet.runtime.detector.Detector` on a Keras backend,
    ``batch_size`` images per call, the next batch pre-processed on a thread meanwhile.

    Args:
        model: Keras model, input ``(B, S, S, 3)`` normalised, 10 outputs (class_p3.., box_p3..).
        samples: objects with ``image_path``.
    """
    from edgedet.model.keras_backend import keras_detector

    meta = eval_meta(image_size=image_size, mean=mean, std=std, anchor_config=anchor_config, class_names=class_names)
    det = keras_detector(model, meta, score_threshold=score_threshold, iou_threshold=iou_threshold,
                         max_detections=max_detections, soft=soft_nms)
    paths = [s.image_path for s in samples]
    batches = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
    out = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(samples), desc="eval", unit="img", leave=False, dynamic_ncols=True)
    with ThreadPoolExecutor(max_workers=1) as pool:
        # Pre-process the next batch (JPEG decode, resize) while the model runs on this one.
        pending = pool.submit(det.preprocess_batch, batches[0]) if batches else None
        for bi in range(len(batches)):
            prepared = pending.result()
            if bi + 1 < len(batches):
                pending = pool.submit(det.preprocess_batch, batches[bi + 1])
            out += det.detect_batch(prepared)
            if bar:
                bar.update(len(prepared.sizes))
    if bar:
        bar.close()
    return out


def evaluate(model, samples, class_names, *, image_size: int, mean, std, anchor_config, **kwargs) -> dict:
    """COCO metrics of ``model`` on ``samples``.

    Returns:
        dict with AP, AP50, AP75, APs, APm, APl (floats, -1 or NaN where undefined) and
        per_class {name: AP}, from :func:`edgedet.runtime.report.evaluate.coco_evaluate`.
    """
    from edgedet.runtime.report.evaluate import coco_evaluate

    dets = predict(model, samples, image_size=image_size, mean=mean, std=std, anchor_config=anchor_config,
                   class_names=class_names, **kwargs)
    return coco_evaluate(samples, dets, class_names)


def format_metrics(m: dict) -> str:
    """One-line summary ``AP 0.512 AP50 0.871 ...``."""
    keys = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    parts = []
    for k in keys:
        v = m.get(k)
        parts.append(f"{k} {v:.3f}" if isinstance(v, (int, float)) and v == v and v >= 0 else f"{k} n/a")
    return "  ".join(parts)


def run_eval(run_dir, data=None, split: str = "test", *, soft_nms: bool = False, iou: float = 0.5,
             score_threshold: float = EVAL_SCORE_THRESHOLD, max_detections: int = 100, which: str = "best",
             batch: int = 8, progress: bool = False, check_policy: str = "skip") -> dict:
    """``edgedet eval``: load a run, read the dataset split, return COCO metrics (+ run/split info).

    The dataset's class list must equal the run's (same names, same order), otherwise class ids
    would be compared across different meanings.
    """
    from edgedet.errors import DataError
    from edgedet.train.check import load_checked
    from edgedet.runs import load_run

    model, info = load_run(run_dir, which=which)
    data = data or info.data.get("dataset")
    if not data:
        raise DataError(f"{run_dir}: run.json names no dataset; pass --data")
    ds = load_checked(data, check_policy, classes=info.class_names or None)
    if info.class_names and list(ds.class_names) != list(info.class_names):
        raise DataError(f"{data}: classes {ds.class_names} differ from the run's {info.class_names}")
    samples = ds.split(split)
    if not samples:
        raise DataError(f"{data}: split {split!r} is empty")
    cfg = info.config
    m = evaluate(model, samples, ds.class_names, image_size=cfg.image_size, mean=cfg.mean, std=cfg.std,
                 anchor_config=cfg.anchor_config, batch_size=batch, score_threshold=score_threshold,
                 iou_threshold=iou, soft_nms=soft_nms, max_detections=max_detections, progress=progress)
    m.update({"run": str(run_dir), "weights": str(info.weights_path), "weights_sha256": info.weights_sha256,
              "data": str(data), "split": split, "variant": cfg.name, "image_size": cfg.image_size,
              "nms": "soft" if soft_nms else "hard", "iou": iou, "score_threshold": score_threshold})
    return m


def print_report(m: dict) -> None:
    """Human-readable COCO summary + per-class AP."""
    print(f"{m.get('variant', '')} {m.get('image_size', '')}px  split {m.get('split', '')}  "
          f"{m.get('num_images', '?')} images  {m.get('num_detections', '?')} detections  ({m.get('nms', 'hard')} NMS)")
    print(format_metrics(m))
    per = m.get("per_class") or {}
    per50 = m.get("per_class_ap50") or {}
    if per:
        width = max(len(n) for n in per)
        print(f"{'class':<{width}}  {'AP':>6}  {'AP50':>6}  {'GT':>5}")
        for name, ap in per.items():
            ap50 = per50.get(name, -1)
            ngt = (m.get("num_gt") or {}).get(name, "")
            f = (lambda v: f"{v:6.3f}" if v is not None and v == v and v >= 0 else "   n/a")
            print(f"{name:<{width}}  {f(ap)}  {f(ap50)}  {ngt:>5}")
