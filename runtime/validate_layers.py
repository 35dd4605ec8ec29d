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
            (see :mod:`edgedet.runtime.validate_worker`).

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


def output_table(base: dict, other: dict, n_images: int) -> dict | None:
    """The ``layer_errors`` section from an output comparison, or None when there is nothing to compare."""
    rows = compare_outputs(base, other)
    if not rows:
        return None
    return {
        "source": "computed by edgedet validate", "kind": "outputs", "columns": OUTPUT_COLUMNS, "rows": rows,
        "note": (f"Head outputs (dequantised) against the float baseline on the first {n_images} images, worst first; "
                 "rel_rmse = RMSE / std of the float output. No quantize diagnosis was found for this model."),
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
    for cand in (folder / f"{stem}.diagnosis.json", folder / "diagnosis.json"):
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


def load_diagnosis(path: str) -> dict | None:
    """A diagnosis JSON as a ``layer_errors`` section, or None when unreadable or empty.

    Accepts a list of row dicts, or a dict holding one under ``layers``/``rows``/``table``/
    ``per_layer``; scalar fields of that dict (e.g. the float/int8 mAP, the selective-float result)
    go into the section's note. Rows keep their order (the diagnosis sorts worst first).
    """
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, ValueError):
        return None
    rows, top = _rows_of(d)
    if not rows:
        return None
    columns: list[str] = []
    for r in rows:
        for k, v in r.items():
            if k not in columns and (v is None or isinstance(v, (str, int, float, bool))):
                columns.append(k)
    clean = [{k: r.get(k) for k in columns} for r in rows]
    facts = [f"{k}={v}" for k, v in top.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)
             and len(str(v)) < 60]
    return {"source": str(path), "kind": "diagnosis", "columns": columns, "rows": clean,
            "note": ("; ".join(facts[:8]) or None)}
