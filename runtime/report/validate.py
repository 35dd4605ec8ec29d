"""``edgedet validate``: float baseline vs every exported model, same runtime, same images.

Each model (the baseline included) runs in its own worker process
(:mod:`edgedet.runtime.report.worker`): one model's native crash cannot take the others down,
and one model's thread pools and caches do not colour the next one's latency. The parent stays
TensorFlow-free; only a Keras baseline's worker imports it.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from pathlib import Path

import numpy as np

from edgedet.errors import ConfigError, DataError, ModelFileError, ToolchainError
from edgedet.extras import has_modules, require
from edgedet.files import model_kind, sweep_stale_temps
from edgedet.runs import is_run_dir
from edgedet.runtime.detections import Detections
from edgedet.runtime.report.evaluate import EVAL_POSTPROCESS, coco_evaluate
from edgedet.runtime.report.build import assemble, failed_entry, latency_block, model_entry, write_report
from edgedet.runtime.report.twins import add_twin_deltas, qat_twins, run_kind
from edgedet.runtime.report.stats import gmacs_per_second
from edgedet.runtime.report.layers import KEEP_OUTPUTS, layer_section
from edgedet.runtime.report.worker import run_worker


def model_format(path: str) -> str:
    if is_run_dir(path):
        return "keras"
    try:
        return model_kind(path)
    except ModelFileError:
        return "unknown"


def model_sha256(path: str) -> str | None:
    """sha256 of a model: the file; an OpenVINO ``.xml`` with its ``.bin``; a folder file by file
    (names and contents, in name order); a training run: its weights file. None if unreadable."""
    import hashlib

    from edgedet.files import sha256_file

    p = str(path).rstrip("/")
    try:
        xmls = sorted(f for f in os.listdir(p) if f.endswith(".xml")) if os.path.isdir(p) and not is_run_dir(p) else []
        if len(xmls) == 1:  # an OpenVINO folder is its model: the same hash as naming its .xml
            p = os.path.join(p, xmls[0])
        if is_run_dir(p):
            from edgedet.runtime.report.keras import run_weights_file

            w = run_weights_file(p)
            return sha256_file(w) if w else None
        if os.path.isdir(p):
            files = sorted(os.path.relpath(os.path.join(r, f), p) for r, _, fs in os.walk(p) for f in fs)
        elif p.endswith(".xml") and os.path.exists(p[:-4] + ".bin"):
            p, files = os.path.dirname(p) or ".", [os.path.basename(p), os.path.basename(p[:-4] + ".bin")]
        else:
            return sha256_file(p)
        h = hashlib.sha256()
        for rel in files:
            h.update(f"{rel}\0{sha256_file(os.path.join(p, rel))}\n".encode())
        return h.hexdigest()
    except OSError:
        return None


def dataset_fingerprint(samples, class_names) -> str:
    """sha256 of what the evaluation sees: class list, then per image its file name, size, boxes
    (rounded to 0.01 px) and classes, in order. Paths are left out, so the same set copied to a
    device fingerprints the same."""
    import hashlib

    h = hashlib.sha256(json.dumps(list(class_names)).encode())
    for s in samples:
        boxes = np.round(np.asarray(s.boxes, np.float64).reshape(-1, 4), 2).tolist()
        row = [os.path.basename(s.image_path), int(s.width), int(s.height), boxes,
               np.asarray(s.classes).reshape(-1).astype(int).tolist()]
        h.update(json.dumps(row).encode() + b"\n")
    return h.hexdigest()


def load_samples(data: str, split: str, limit: int | None = None, classes: list[str] | None = None):
    """``(samples, class_names)`` of one split, checked the way training and ``edgedet eval`` check it.

    ``classes``: the baseline run's class list, passed on as ``edgedet eval`` does (it fixes the
    class order of VOC datasets and rejects a dataset that disagrees).
    """
    from edgedet.train.check import load_checked

    ds = load_checked(data, "skip", classes=classes)
    samples = list(ds.split(split))
    if limit:
        samples = samples[: int(limit)]
    if not samples:
        raise DataError(f"{data}: split {split!r} has no images")
    return samples, list(ds.class_names)


def resolve_thresholds(device: str | None, max_ap_drop=None, latency_budget_ms=None, latency_metric=None):
    """``(profile or None, thresholds dict)``: the device profile's, overridden by explicit values."""
    prof = None
    th = {"device": None, "max_ap_drop": None, "latency_budget_ms": None, "latency_metric": "end_to_end.p50"}
    if device:
        from edgedet.devices import load_profile

        prof = load_profile(device)
        th.update(device=prof.name, device_file=prof.path, device_arch=prof.arch or None, max_ap_drop=prof.max_map_drop,
                  latency_budget_ms=prof.latency_ms)
    if max_ap_drop is not None:
        if not 0 <= max_ap_drop <= 1:
            raise ConfigError(f"--max-ap-drop {max_ap_drop}: give an AP fraction in 0..1 (0.01 = one point)")
        th["max_ap_drop"] = float(max_ap_drop)
    if latency_budget_ms is not None:
        th["latency_budget_ms"] = float(latency_budget_ms)
    if latency_metric:
        th["latency_metric"] = latency_metric
    return prof, th


def _device_for(path: str, prof, threads):
    """The profile applies to files its backend runs; other formats run on their CPU default."""
    if prof is None:
        return None, threads
    from edgedet.runtime.detector import backend_for

    try:
        kind = backend_for(path)
    except Exception:  # noqa: BLE001 - the worker reports the bad suffix as the model's error
        return None, threads
    if kind == prof.backend:
        return prof.path or prof.name, threads  # the file itself: a --device PATH profile's name is not findable
    return None, threads or prof.threads


def _few(names) -> str:
    return ", ".join(map(str, names[:5])) + (f", ... ({len(names)} in all)" if len(names) > 5 else "")


def _detections(npz: dict, model_labels: list[str], class_names: list[str]) -> list[Detections]:
    """Per-image Detections with class ids mapped from the model's labels to the dataset's, by name."""
    index = {n: i for i, n in enumerate(class_names)}
    if model_labels == class_names:
        cmap = np.arange(len(class_names))
    else:
        missing = [n for n in class_names if n not in model_labels]
        if len(missing) == len(class_names):
            raise DataError(f"model labels [{_few(model_labels)}] share no class with the dataset's [{_few(class_names)}]")
        cmap = np.asarray([index.get(n, -1) for n in model_labels] or [-1])
    out, start = [], 0
    for n in npz["counts"]:
        sl = slice(start, start + int(n))
        start += int(n)
        cls = npz["classes"][sl]
        cls = np.where((cls >= 0) & (cls < len(cmap)), cmap[np.clip(cls, 0, len(cmap) - 1)], -1)
        keep = cls >= 0
        out.append(Detections(npz["boxes"][sl][keep], npz["scores"][sl][keep], cls[keep].astype(np.int32),
                              tuple(class_names)))
    return out


def _entry(name, path, role, result, npz, samples, class_names) -> dict:
    fmt = model_format(path)
    meta = result.get("meta") or {}
    common = {
        "target": meta.get("target") or ("keras" if fmt == "keras" else None),
        "quantization": meta.get("quantization"), "file_size_bytes": result.get("file_size_bytes"),
        "sha256": model_sha256(path),
        "macs": meta.get("macs"),
        # a file with the post-processing op in its graph: its settings (NMS mode, baked threshold)
        "nms": (meta.get("extra") or {}).get("nms") if meta.get("outputs") == "nms" else None,
        "provenance": result.get("provenance") or {"backend": None, "backend_version": None, "delegate": None,
                                                   "threads": None, "device": None},
    }
    if not result.get("ok"):
        err = result.get("error") or "failed"
        if result.get("images_done"):
            err += f" (after {result['images_done']} of {len(samples)} images)"
        return failed_entry(name, path, role, fmt, err, **common)
    try:
        dets = _detections(npz, meta.get("labels") or class_names, class_names)
        evaluation = coco_evaluate(samples, dets, class_names)
    except Exception as exc:  # noqa: BLE001 - e.g. disjoint labels: this model fails, not the run
        return failed_entry(name, path, role, fmt, f"{type(exc).__name__}: {exc}", **common)
    t = result["timings"]
    lat = latency_block(result.get("init_ms"), result.get("first_run_ms"), t["pre"], t["invoke"], t["post"],
                        t["end_to_end"])
    p50 = lat["invoke"]["p50"]
    entry = model_entry(name, path, role, fmt, evaluation, lat,
                        gmacs_per_s=gmacs_per_second(meta.get("macs"), p50 / 1e3 if p50 else None), **common)
    return entry


# The modules that run each kind of model file (any one of them).
_RUNS = {"tflite": ("ai_edge_litert", "tflite_runtime"), "onnx": ("onnxruntime",), "openvino": ("openvino",)}


def check_runnable(models: list[str], baseline: str | None) -> None:
    """Before the first model runs: every file exists, is a model kind, and its runtime is
    installed (a baseline over the whole split can take minutes on a board)."""
    from edgedet.extras import install_hint

    if baseline and not os.path.exists(baseline):
        raise ConfigError(f"--baseline {baseline}: no such run folder or model file")
    if baseline and os.path.isdir(baseline) and not is_run_dir(baseline) and is_run_dir(os.path.join(baseline, "2_train")):
        raise ConfigError(f"--baseline {baseline}: a pipeline folder; its float training run is {os.path.join(baseline, '2_train')}")
    missing = [m for m in models if not os.path.exists(m)]
    if missing:
        raise ConfigError(f"--models {missing[0]}: no such model file" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    files = ([baseline] if baseline and not is_run_dir(baseline) else []) + list(models)
    for k, path in enumerate(files):
        flag = "--baseline" if k == 0 and path == baseline else "--models"
        try:
            kind = model_kind(path)
        except ModelFileError as exc:
            raise ConfigError(f"{flag} {exc}") from None
        if not any(has_modules(m) for m in _RUNS[kind]):
            raise ToolchainError(f"{flag} {path}: running it needs {_RUNS[kind][0]}, which is not installed: "
                                 f"{install_hint(_RUNS[kind][0])}")


def row_names(paths: list[str]) -> list[str]:
    """Row names: the file name, or ``parent/file`` where file names collide (e.g. the
    ``float/`` PTQ and ``qat/`` QAT exports are both ``lite0_tflite-int8.tflite``)."""
    base = [os.path.basename(str(p).rstrip("/")) or str(p) for p in paths]
    names, seen = [], {}
    for p, b in zip(paths, base):
        n = b
        if base.count(b) > 1:
            parent = os.path.basename(os.path.dirname(os.path.abspath(str(p).rstrip("/"))))
            n = f"{parent}/{b}" if parent else b
        seen[n] = seen.get(n, 0) + 1
        names.append(n if seen[n] == 1 else f"{n} #{seen[n]}")
    return names


def _diagnosis_map(diagnosis: list[str] | None) -> dict[str, str]:
    """``--diagnosis`` values (``PATH`` for every int8 model, or ``MODEL=PATH``) as {model or "*": path}."""
    diag_map: dict[str, str] = {}
    for d in diagnosis or []:
        key, sep, val = d.rpartition("=")
        diag_map[key if sep else "*"] = val
    for p in diag_map.values():
        if not os.path.isfile(p):
            raise ConfigError(f"--diagnosis {p}: no such file")
        try:
            with open(p, encoding="utf-8") as f:
                json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"--diagnosis {p}: not a JSON diagnosis (edgedet quantize diagnose writes diagnosis.json): {exc}") from None
    return diag_map


def _jobs(models: list[str], baseline: str | None, log=print) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """The (role, path) jobs in report order, their row names and the QAT runs' float twins:
    the baseline, each QAT run's float twin (extra training vs quantization loss), the models."""
    twins = qat_twins(models, log)
    jobs = ([("baseline", baseline)] if baseline else []) + [("twin", run) for run in twins]
    jobs += [("candidate", m) for m in models]
    names = row_names([p for _, p in jobs])
    for k, (role, path) in enumerate(jobs):
        if role == "twin" or (role == "baseline" and is_run_dir(path)):
            kind = "float twin" if role == "twin" else "QAT, fake-quantized" if run_kind(path) == "qat" else "float"
            names[k] = f"{kind} ({os.path.basename(path.rstrip('/'))})"
    return jobs, names, twins


def validate(models: list[str], data: str, out: str, baseline: str | None = None, split: str = "test",
             device: str | None = None, threads: int | None = None, runs: int = 0, fallback: str | None = None,
             diagnosis: list[str] | None = None, max_ap_drop: float | None = None,
             latency_budget_ms: float | None = None, latency_metric: str | None = None,
             limit: int | None = None, timeout: float | None = None, html: bool = True,
             progress: bool = True, command: str | None = None, data_plot: str | None = None,
             log=print) -> dict:
    """Run the comparison and write report.json / report.md / report.html into ``out``.

    Args:
        models: exported model files (``.tflite``, ``.onnx``, OpenVINO ``.xml``/folder).
        data: dataset path (any format ``edgedet data`` reads); ``split`` picks the images.
        out: report folder (created).
        baseline: training run folder (Keras float) or an fp32 model file; None: no deltas.
        device: device profile name: thresholds, and backend device/threads for its format.
        threads: CPU threads for every model (overrides the profile's).
        fallback: "cpu" runs a model on the CPU where its delegate or device is missing
            (``provenance.device`` records where it ran).
        runs: minimum timed calls per model (the images are cycled for the extra ones).
        diagnosis: quantize diagnosis JSON paths, ``PATH`` (every int8 model) or ``MODEL=PATH``.
        max_ap_drop, latency_budget_ms, latency_metric: override the profile's thresholds.
        limit: use only the first N images of the split.
        timeout: seconds per model before it is stopped and marked ❌.
        data_plot: the dataset's ``data stats --plot`` picture, linked from the report (its path
            is stored relative to ``out`` so the report folder can move with its run folder).

    Returns:
        The report dict (``report["summary"]["exit_code"]`` is the CLI's exit code).
    """
    if not models and not baseline:
        raise ConfigError("--models: give at least one model file")
    if data_plot and not Path(data_plot).is_file():
        raise ConfigError(f"{data_plot}: --data-plot file does not exist")
    require("pycocotools", "PIL", what="edgedet validate")
    if html:
        require("matplotlib", what="report.html", alternative="pass --no-html")
    prof, th = resolve_thresholds(device, max_ap_drop, latency_budget_ms, latency_metric)
    elsewhere = prof.other_host(platform.machine()) if prof is not None else None
    if elsewhere:
        log(f"note: {elsewhere}")
    check_runnable(models, baseline)
    run_classes = None
    if baseline and is_run_dir(baseline):
        from edgedet.runtime.report.keras import run_class_names

        run_classes = run_class_names(baseline)
    diag_map = _diagnosis_map(diagnosis)
    samples, class_names = load_samples(data, split, limit, classes=run_classes)
    jobs, names, twins = _jobs(models, baseline, log)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(out_dir)  # what a killed validate left
    # temp_name's pattern (.NAME.tmp<pid>...), so the sweep above knows whose it is
    work_root = Path(tempfile.mkdtemp(prefix=f".validate.tmp{os.getpid()}.", dir=out_dir))
    base_job = {"images": [s.image_path for s in samples], "eval_post": EVAL_POSTPROCESS, "runs": runs,
                "keep_outputs": KEEP_OUTPUTS, "progress": progress, "fallback": fallback}
    entries, base_npz, kept = [], None, []
    try:
        for k, ((role, path), name) in enumerate(zip(jobs, names)):
            log(f"[{k + 1}/{len(jobs)}] {name}")
            dev, thr = _device_for(path, prof, threads)
            kind = "twin" if role == "twin" else "run" if is_run_dir(path) else "file"
            job = dict(base_job, model=str(path), kind=kind, device=dev, threads=thr)
            if kind in ("run", "twin"):  # the weights file, not the whole run folder with its logs
                from edgedet.runtime.report.keras import run_weights_size

                job["file_size_bytes"] = run_weights_size(path)
            result, npz = run_worker(job, work_root / f"m{k}", timeout)
            if role == "baseline" and npz is not None:
                base_npz = npz
            entry = _entry(name, str(path), role, result, npz, samples, class_names)
            kept.append((entry, result.get("meta") or {}, npz))
            if entry["status"] == "fail":
                log(f"    ❌ {entry['error']}")
            entries.append(entry)
        for entry, meta, npz in kept:
            entry["layer_errors"] = layer_section(entry, meta, npz, base_npz, samples, kept, diag_map)
    finally:
        shutil.rmtree(work_root, ignore_errors=True)
    add_twin_deltas(entries, twins)
    from edgedet.runtime.report.bench import rank_candidates

    rank_candidates(entries, th["latency_metric"], th.get("device_file") or device, threads, fallback,
                    samples[0].image_path if samples else None)
    dataset = {"path": str(data), "split": split, "num_images": len(samples), "class_names": class_names,
               "fingerprint": dataset_fingerprint(samples, class_names)}
    if data_plot:
        dataset["plot"] = os.path.relpath(Path(data_plot).resolve(), out_dir.resolve())
    report = assemble(entries, dataset, th, command=command)
    write_report(report, out_dir, html=html)
    return report
