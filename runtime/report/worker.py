"""One model's share of ``edgedet validate``, run in its own process.

``python -m edgedet.runtime.report.worker JOB.json`` loads one model (a file through
:class:`~edgedet.runtime.detector.Detector`, or a training run through the same Detector with a
Keras backend; its accuracy detections come from ``edgedet eval``'s own predict), runs it on
every image and writes into the job's ``out`` folder:

* ``result.json``: ``ok``/``error``, init and first-run times, per-call pre/invoke/post/end-to-end
  samples (ms), provenance, metadata facts (target, quantization, MACs, labels), file size;
* ``detections.npz``: ``boxes (M, 4)``, ``scores (M,)``, ``classes (M,)`` and ``counts (n_images,)``
  (detections of image i are the i-th run of ``counts``), plus ``out_<i>_<name>`` dequantised raw
  outputs ``(H, W, K)`` of the first ``keep_outputs`` images for the per-output error table.

Its own process means a native crash (a delegate's segfault, an abort) takes down only this
model: the parent (:func:`run_worker`, called by ``validate``) sees the signal, reads the
faulthandler log and marks the model ❌.
"""
from __future__ import annotations

import faulthandler
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from edgedet.files import atomic_write_text, file_size


def _one_line(exc: BaseException) -> str:
    from edgedet.errors import EdgedetError

    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return msg if isinstance(exc, EdgedetError) else f"{type(exc).__name__}: {msg}"


def _append(dets, boxes, scores, classes, counts) -> None:
    boxes.append(np.asarray(dets.boxes, np.float32).reshape(-1, 4))
    scores.append(np.asarray(dets.scores, np.float32))
    classes.append(np.asarray(dets.classes, np.int32))
    counts.append(len(dets))


def _load_detector(job: dict):
    """``(detector, eval_fn or None)``; for a training run, eval_fn gives ``edgedet eval``'s detections."""
    from edgedet.runtime.detector import Detector

    if job["kind"] in ("run", "twin"):
        from edgedet.runtime.report.keras import eval_detections, keras_detector, load_baseline

        model, info, meta = load_baseline(job["model"], twin=job["kind"] == "twin")
        return keras_detector(model, meta), lambda: eval_detections(model, info, job["images"], job["eval_post"])
    return Detector.from_file(job["model"], device=job.get("device"), threads=job.get("threads"),
                              fallback=job.get("fallback")), None


def run_job(job: dict, result: dict) -> dict:
    """Run one model on the job's images, filling ``result`` as it goes (so a failure part-way
    still reports provenance and how far it got)."""
    out_dir = job["out"]
    size = job.get("file_size_bytes")  # a run's weights file, set by the caller; else the file
    result.update({"ok": False, "error": None, "images_done": 0,
                   "file_size_bytes": size if size is not None else file_size(job["model"])})
    t0 = time.perf_counter()
    det, eval_fn = _load_detector(job)
    result["init_ms"] = (time.perf_counter() - t0) * 1e3
    result.update(_describe(det))
    deploy = {k: getattr(det, k) for k in ("score_threshold", "iou_threshold", "max_detections", "nms")}
    evalpost = job["eval_post"]
    times = {"pre": [], "invoke": [], "post": [], "end_to_end": []}
    boxes, scores, classes, counts, kept = [], [], [], [], {}
    n_images = len(job["images"])
    first_ms = None
    for call, i, image in _frames(job, max(n_images, int(job.get("runs") or 0))):
        # One invoke, two decodes: the timed one with the model's deployment settings, then an
        # untimed one with the evaluation settings (low score floor) for the accuracy numbers.
        a = time.perf_counter()
        x, scales, hw = det.preprocess(image)
        b = time.perf_counter()
        outs = det.backend.run(x)
        c = time.perf_counter()
        det.decode(outs, scales, hw)
        d = time.perf_counter()
        if call < n_images:
            if i < int(job.get("keep_outputs") or 0):
                for name, arr in det.raw_outputs(outs).items():
                    kept[f"out_{i}_{name}"] = arr
            if eval_fn is None:
                _append(det.decode(outs, scales, hw, **evalpost), boxes, scores, classes, counts)
            result["images_done"] = i + 1
        del outs  # zero-copy views must go before the next invoke
        if call == 0:
            first_ms = (d - a) * 1e3  # includes lazy allocation/JIT; kept out of the percentiles
            continue
        times["pre"].append((b - a) * 1e3)
        times["invoke"].append((c - b) * 1e3)
        times["post"].append((d - c) * 1e3)
        times["end_to_end"].append((d - a) * 1e3)
    if eval_fn is not None:
        for dets in eval_fn():
            _append(dets, boxes, scores, classes, counts)
    result.update({"ok": True, "first_run_ms": first_ms, "timings": times,
                   "deploy_postprocess": deploy})
    np.savez(os.path.join(out_dir, "detections.npz"),
             boxes=np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32),
             scores=np.concatenate(scores) if scores else np.zeros((0,), np.float32),
             classes=np.concatenate(classes) if classes else np.zeros((0,), np.int32),
             counts=np.asarray(counts, np.int64), **kept)
    return result


def _frames(job: dict, n_calls: int):
    """(call, image index, image as HxWx3 uint8) for each of ``n_calls`` calls: the job's images
    in order, then timing-only calls that reuse up to 16 of them from memory."""
    from edgedet.runtime.preprocess import load_image

    images = job["images"]
    cache: list[np.ndarray] = []
    fault = os.environ.get("EDGEDET_VALIDATE_FAULT", "")  # test hook: "<model basename>:<image index>"
    bar = _progress_bar(job, n_calls)
    try:
        for call in range(n_calls):
            if bar is not None:
                bar.update(1)
            if call < len(images):
                image = load_image(images[call])
                if len(cache) < 16:
                    cache.append(image)
            else:
                image = cache[call % len(cache)]
            if fault and fault == f"{os.path.basename(job['model'])}:{call}":
                os.abort()
            yield call, call % len(images), image
    finally:
        if bar is not None:
            bar.close()


def _describe(det) -> dict:
    """The report's ``meta`` (what the file says about itself) and ``provenance`` (what ran it)."""
    meta = det.meta
    prov = det.describe()
    return {
        "meta": {"labels": list(det.labels), "target": meta.target or None, "quantization": meta.quantization,
                 "macs": meta.macs, "model": meta.model, "calib_sha256": meta.calib_sha256 or None,
                 "source_sha256": meta.source_sha256 or None, "outputs": meta.outputs,
                 "input_size": list(meta.input_size), "extra": meta.extra},
        "provenance": {"backend": prov.get("backend"), "backend_version": prov.get("version") or None,
                       "delegate": prov.get("delegate"), "threads": prov.get("threads"),
                       "device": prov.get("device")},
    }


def _progress_bar(job: dict, total: int):
    """A tqdm bar on stderr when the job asks for one and tqdm is installed, else None."""
    if not job.get("progress"):
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional on a device
        return None
    return tqdm(total=total, desc=os.path.basename(job["model"].rstrip("/"))[:28], unit="img",
                leave=False, file=sys.stderr)


def _crash_text(rc: int, work: Path) -> str:
    try:
        name = signal.Signals(-rc).name if rc < 0 else f"exit status {rc}"
    except ValueError:
        name = f"signal {-rc}"
    log = (work / "crash.log").read_text(errors="replace") if (work / "crash.log").exists() else ""
    frames = [ln.strip() for ln in log.splitlines() if ln.strip().startswith("File ")]
    where = f"; in {frames[0]}" if frames else ""
    return f"worker process crashed ({name}){where}"


def run_worker(job: dict, work: Path, timeout: float | None = None) -> tuple[dict, dict | None]:
    """Run one job in a subprocess; ``(result, npz or None)``. Never raises for model failures."""
    work.mkdir(parents=True, exist_ok=True)
    job = dict(job, out=str(work))
    (work / "job.json").write_text(json.dumps(job))
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    kwargs = {}
    if sys.platform.startswith("linux"):
        from edgedet.stages import die_with_parent

        kwargs["preexec_fn"] = die_with_parent  # a killed validate takes its worker with it
    try:
        proc = subprocess.run([sys.executable, "-m", "edgedet.runtime.report.worker", str(work / "job.json")],
                              env=env, timeout=timeout, check=False, **kwargs)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout:g} s"}, None
    res_path = work / "result.json"
    if not res_path.exists():
        return {"ok": False, "error": _crash_text(rc, work)}, None
    result = json.loads(res_path.read_text())
    npz = None
    if result.get("ok") and (work / "detections.npz").exists():
        with np.load(work / "detections.npz") as z:
            npz = {k: z[k] for k in z.files}
    return result, npz


def main(argv: list[str]) -> int:
    with open(argv[0], encoding="utf-8") as f:
        job = json.load(f)
    out_dir = job["out"]
    crash_log = open(os.path.join(out_dir, "crash.log"), "w")  # noqa: SIM115 - lives until exit
    faulthandler.enable(file=crash_log)
    result: dict = {}
    try:
        run_job(job, result)
    except Exception as exc:  # noqa: BLE001 - any failure becomes the model's ❌ error text
        result.update({"ok": False, "error": _one_line(exc), "traceback": traceback.format_exc()})
    atomic_write_text(os.path.join(out_dir, "result.json"),
                      json.dumps(result, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the parent says "interrupted"
        sys.exit(130)
