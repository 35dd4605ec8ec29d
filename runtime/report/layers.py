"""The per-layer section of a validation report.

Two sources, best first:

* the quantize stage's diagnosis (``edgedet quantize diagnose``: RMSE/scale per tensor between the
  float and int8 models), found next to the model file or given with ``--diagnosis``;
* otherwise, for any model with raw outputs, an output-level comparison computed here: each of
  the ten head outputs (class_p3..box_p7) against the float baseline's on the same images. It
  needs no TensorFlow and works for every backend, so even an OpenVINO or ONNX file gets one.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

OUTPUT_COLUMNS = ["output", "rel_rmse", "rmse", "max_abs", "cosine", "float_std"]
INT8_METHODS = ("ptq", "qat", "int8", "full_integer")


def compare_outputs(base: dict, other: dict) -> list[dict]:
    """Per-output error of ``other`` against the float ``base``.

    Args:
        base, other: npz-like mappings with ``out_<image>_<name>`` float32 ``(H, W, K)`` arrays
            (see :mod:`edgedet.runtime.report.worker`).

    Returns:
        Rows ``{output, rel_rmse, rmse, max_abs, cosine, float_std}`` sorted worst first, where
        ``rel_rmse = rmse / std(float output)`` (0 = identical; ~1 = as far off as the signal is big).
    """
    names: dict[str, list[str]] = {}
    for key in other:
        if key.startswith("out_") and key in base:
            names.setdefault(key.split("_", 2)[2], []).append(key)
    rows = []
    for name, keys in names.items():
        a = np.concatenate([np.asarray(base[k], np.float64).ravel() for k in sorted(keys)])
        b = np.concatenate([np.asarray(other[k], np.float64).ravel() for k in sorted(keys)])
        if a.shape != b.shape or a.size == 0:
            continue
        err = b - a
        rmse = float(np.sqrt(np.mean(err ** 2)))
        std = float(a.std())
        denom = float(np.linalg.norm(a) * np.linalg.norm(b))
        rows.append({
            "output": name,
            "rel_rmse": rmse / std if std > 0 else None,
            "rmse": rmse,
            "max_abs": float(np.abs(err).max()),
            "cosine": float(np.dot(a, b) / denom) if denom > 0 else None,
            "float_std": std,
        })
    rows.sort(key=lambda r: -(r["rel_rmse"] if r["rel_rmse"] is not None else np.inf))
    return rows


def output_table(base: dict, other: dict, n_images: int, why: str | None = None) -> dict | None:
    """The ``layer_errors`` section from an output comparison, or None when there is nothing to compare."""
    rows = compare_outputs(base, other)
    if not rows:
        return None
    return {
        "source": "computed by edgedet validate", "kind": "outputs", "columns": OUTPUT_COLUMNS, "rows": rows,
        "note": (f"Head outputs (dequantised) against the float baseline on the first {n_images} images, worst first; "
                 "rel_rmse = RMSE / std of the float output. "
                 + (f"Not the quantize diagnosis: {why}." if why else "No quantize diagnosis was found for this model.")),
    }


def is_int8(meta: dict) -> bool:
    """Whether a model's metadata describes a full-integer model (the diagnosis applies)."""
    q = (meta.get("quantization") or {}).get("method") or ""
    return q in INT8_METHODS or "int8" in (meta.get("target") or "") or (meta.get("target") or "") == "edgetpu"


def find_diagnosis(model_path: str, meta: dict, explicit: dict[str, str] | None = None) -> str | None:
    """Path of the quantize diagnosis JSON that belongs to a model, if any.

    Looks at, in order: ``--diagnosis`` (``explicit``: keyed by model path or file name, or ``"*"``
    for every int8 model), a ``diagnosis`` path in the model's metadata (relative to the file),
    ``<stem>.diagnosis.json`` and ``diagnosis.json`` next to the file.
    """
    explicit = explicit or {}
    for key in (model_path, os.path.basename(model_path)):
        if key in explicit:
            return explicit[key]
    if not is_int8(meta):
        return None
    if "*" in explicit:
        return explicit["*"]
    folder = Path(model_path).parent
    for src in (meta.get("extra") or {}, meta.get("quantization") or {}):
        p = src.get("diagnosis")
        if isinstance(p, str):
            cand = folder / p
            if cand.is_file():
                return str(cand)
    stem = Path(model_path).name.split(".")[0]
    cands = [folder / f"{stem}.diagnosis.json", folder / "diagnosis.json"]
    run = ((meta.get("extra") or {}).get("source") or {}).get("run")
    if isinstance(run, str):  # `edgedet quantize diagnose RUN` writes RUN/diagnosis/diagnosis.json
        cands.append(Path(run) / "diagnosis" / "diagnosis.json")
    for cand in cands:
        if cand.is_file():
            return str(cand)
    return None


def _rows_of(d) -> tuple[list[dict], dict]:
    if isinstance(d, list):
        return [r for r in d if isinstance(r, dict)], {}
    for key in ("layers", "rows", "table", "per_layer"):
        if isinstance(d.get(key), list):
            return [r for r in d[key] if isinstance(r, dict)], d
    return [], d


# Shown first, in this order, when a diagnosis row has them (edgedet quantize diagnose's rows).
_FIRST = ("rank", "tensor", "layer", "op", "rmse_over_scale")
_FACTS = ("float_AP", "int8_AP", "selective_AP", "ap_drop", "recovered_AP", "healthy_rmse_over_scale", "run_kind",
          "target")


def load_diagnosis(path: str, calib_sha256: str | None = None) -> tuple[dict | None, str | None]:
    """A diagnosis JSON as a ``layer_errors`` section.

    Accepts ``edgedet quantize diagnose``'s ``diagnosis.json`` (rows under ``layers``; a QAT run's
    diagnosis has only output cosines under ``outputs``, which become the rows), or any list of row
    dicts, or a dict holding one under ``rows``/``table``/``per_layer``. Its headline numbers (float
    and int8 AP, selective-float AP, ...) go into the note. Rows keep their order (worst first).

    Args:
        calib_sha256: the model's calibration-set hash; a diagnosis made with a different
            calibration set describes another model and is not used.

    Returns:
        ``(section or None, why not)``.
    """
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, ValueError) as exc:
        return None, f"diagnosis {path} unreadable ({exc})"
    top = d if isinstance(d, dict) else {}
    diag_sha = ((top.get("calibration") or {}).get("sha256")) if isinstance(top.get("calibration"), dict) else None
    if calib_sha256 and diag_sha and calib_sha256 != diag_sha:
        return None, f"diagnosis {path} was made with another calibration set"
    rows, _ = _rows_of(d)
    if not rows and isinstance(top.get("outputs"), dict):
        rows = [{"output": k, "cosine": v} for k, v in top["outputs"].items()]
        rows.sort(key=lambda r: r["cosine"] if isinstance(r["cosine"], (int, float)) else 2.0)
    if not rows:
        return None, f"diagnosis {path} has no rows"
    columns: list[str] = []
    for r in rows:
        for k, v in r.items():
            if k not in columns and (v is None or isinstance(v, (str, int, float, bool))):
                columns.append(k)
    columns = [c for c in _FIRST if c in columns] + [c for c in columns if c not in _FIRST]
    clean = [{k: r.get(k) for k in columns} for r in rows]
    keys = [k for k in _FACTS if k in top] + [k for k in top if k not in _FACTS]
    facts = [f"{k}={top[k]}" for k in keys if isinstance(top[k], (int, float, str)) and not isinstance(top[k], bool)
             and len(str(top[k])) < 60 and k not in ("kind", "version", "run", "model")]
    return {"source": str(path), "kind": "diagnosis", "columns": columns, "rows": clean,
            "note": ("; ".join(facts[:8]) or None)}, None


KEEP_OUTPUTS = 4  # images whose raw outputs feed the per-output error table
TENSOR_IMAGES = 2  # images for the tensor-by-tensor TFLite comparison


def _is_fp32_tflite(entry: dict) -> bool:
    q = (entry.get("quantization") or {}).get("method") or "none"
    return entry["format"] == "tflite" and entry["status"] != "fail" and q == "none" and entry.get("target") != "tflite-fp16"


def _source(meta: dict) -> str:
    """What a file was exported from (weights hash, else the run folder); '' when unknown."""
    return meta.get("source_sha256") or str(((meta.get("extra") or {}).get("source") or {}).get("run") or "")


def layer_section(entry: dict, meta: dict, npz, base_npz, samples, kept: list, diagnosis_map) -> dict | None:
    """The per-layer section of a candidate, best source first.

    1. the quantize diagnosis (when it belongs to this model);
    2. for an int8 TFLite file, every tensor against an fp32 TFLite file of the same weights (the
       baseline or a candidate; a QAT model's fine-tuned weights have no such twin), via LiteRT;
    3. the ten head outputs against the float baseline (any backend).
    """
    if entry["role"] != "candidate" or entry["status"] == "fail":
        return None
    diag = find_diagnosis(entry["path"], meta, diagnosis_map)
    table, why = load_diagnosis(diag, meta.get("calib_sha256")) if diag else (None, None)
    if table is not None:
        return table
    ref = next((e for e, m, _ in kept if _is_fp32_tflite(e) and e is not entry and _source(m) == _source(meta)), None)
    if entry["format"] == "tflite" and is_int8(meta) and ref is not None:
        from edgedet.runtime.report.tensors import tensor_table

        try:
            images = [s.image_path for s in samples[:TENSOR_IMAGES]]
            table = tensor_table(ref["path"], entry["path"], images)
        except Exception as exc:  # noqa: BLE001 - an analysis failure must not sink the report
            why = f"tensor comparison failed ({type(exc).__name__}: {exc})"
        if table is not None:
            if why:
                table["note"] += f" Not the quantize diagnosis: {why}."
            return table
    if base_npz is not None and npz is not None:
        table = output_table(base_npz, npz, min(KEEP_OUTPUTS, len(samples)), why)
        if (meta.get("quantization") or {}).get("method") == "qat":  # other weights than the baseline's
            table["note"] += (" For a QAT file these errors include what its extra training changed; its"
                              " 'quantization vs its float twin' ΔAP is quantization alone.")
        return table
    return None
