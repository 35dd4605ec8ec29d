"""The float twin of a QAT file: its QAT run's weights without fake quantization, a Keras row
``validate`` adds, so the report can tell what quantization cost apart from the extra training."""
from __future__ import annotations

from edgedet.errors import ModelFileError
from edgedet.extras import has_modules
from edgedet.runs import is_run_dir, read_run_json
from edgedet.runtime.report.build import across_classes


def run_kind(run: str) -> str | None:
    """``"float"`` or ``"qat"`` from a run folder's run.json; None when there is none to read."""
    try:
        return read_run_json(run).get("kind")
    except ModelFileError:
        return None


def qat_twins(models: list[str], log=print) -> list[str]:
    """The QAT run folders the models were exported from (metadata ``extra.source``), each once.

    The twin is an extra row the user did not ask for: where TensorFlow is not installed (a
    device install) it is left out with a note instead of failing the report."""
    from edgedet.runtime.metadata import read_metadata

    runs = []
    for m in models:
        try:
            meta = read_metadata(m)
        except Exception:  # noqa: BLE001 - an unreadable file is reported by its own worker
            meta = None
        src = (meta.extra.get("source") or {}) if meta is not None else {}
        run = src.get("run")
        if src.get("kind") == "qat" and run and is_run_dir(run) and run not in runs:
            runs.append(run)
    if runs and not has_modules("tensorflow", "tf_keras"):
        log(f"note: no float twin row for {', '.join(runs)}: running a Keras run needs pip install \"edgedet[train]\"")
        return []
    return runs


def add_twin_deltas(entries: list[dict], twins: list[str]) -> None:
    """Give each QAT model's entry ``vs_twin``: its AP minus its float twin's (the quantization loss).

    Not for a file whose in-graph NMS suppresses across classes: the twin runs the runtime's
    per-class NMS, so that difference is not quantization alone."""
    by_run = {e["path"]: e for e in entries if e["role"] == "twin"}
    for e in entries:
        src = ((e.get("quantization") or {}).get("method") == "qat" and e["role"] == "candidate"
               and not across_classes(e) and by_run.get(_source_run(e)))
        if src and src.get("metrics") and e.get("metrics"):
            from edgedet.runtime.report.evaluate import SUMMARY_KEYS
            from edgedet.runtime.report.stats import delta

            e["vs_twin"] = {"twin": src["name"],
                            "delta": {k: delta(e["metrics"][k], src["metrics"][k]) for k in SUMMARY_KEYS}}


def _source_run(entry: dict) -> str | None:
    from edgedet.runtime.metadata import read_metadata

    try:
        meta = read_metadata(entry["path"])
    except Exception:  # noqa: BLE001
        return None
    return (meta.extra.get("source") or {}).get("run") if meta is not None else None
