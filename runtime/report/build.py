"""Assemble the validation report (one dict) and write report.json / report.md / report.html.

The dict follows :data:`edgedet.runtime.report_schema.REPORT_SCHEMA` (documented in
``docs/report_schema.md``). ``edgedet validate`` builds one entry per model with
:func:`model_entry` / :func:`failed_entry`, then calls :func:`assemble` and :func:`write_report`.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

from edgedet.files import atomic_write_text

from edgedet.runtime.report.evaluate import SUMMARY_KEYS
from edgedet.runtime.report.provenance import host_info
from edgedet.runtime.report.schema import REPORT_SCHEMA_VERSION, STATUS_ICONS, check_schema
from edgedet.runtime.report.stats import delta, summarize

LATENCY_METRICS = ("end_to_end.p50", "end_to_end.p90", "end_to_end.p99", "invoke.p50", "invoke.p90", "invoke.p99")
SAMPLES_KEPT = 2000  # latency samples stored per part in report.json (histograms); summaries use all


def _clean(v):
    """COCO's -1 ('no ground truth') becomes None so JSON readers cannot average it by mistake."""
    return None if v is None or v < 0 else float(v)


def latency_block(init_ms, first_run_ms, pre, invoke, post, end_to_end) -> dict:
    """The ``latency`` section from per-call samples in milliseconds (first run excluded)."""
    return {
        "init_ms": init_ms, "first_run_ms": first_run_ms,
        "invoke": summarize(invoke), "end_to_end": summarize(end_to_end),
        "pre": summarize(pre), "post": summarize(post),
        "samples_ms": {k: [round(float(x), 4) for x in list(v)[:SAMPLES_KEPT]]
                       for k, v in (("invoke", invoke), ("end_to_end", end_to_end), ("pre", pre), ("post", post))},
    }


def _base_entry(name: str, path: str, role: str, fmt: str) -> dict:
    return {
        "name": name, "path": str(path), "role": role, "status": "pass", "status_icon": STATUS_ICONS["pass"],
        "reasons": [], "error": None, "format": fmt, "target": None, "quantization": None,
        "file_size_bytes": None, "macs": None, "metrics": None, "delta": None, "per_class": None,
        "latency": None, "gmacs_per_s": None,
        "provenance": {"backend": None, "backend_version": None, "delegate": None, "threads": None, "device": None},
        "layer_errors": None,
    }


def failed_entry(name: str, path: str, role: str, fmt: str, error: str, **extra) -> dict:
    """A ❌ entry: the model could not be loaded or crashed mid-run."""
    e = _base_entry(name, path, role, fmt)
    e.update(extra)
    e.update({"status": "fail", "status_icon": STATUS_ICONS["fail"], "error": error})
    return e


def model_entry(name: str, path: str, role: str, fmt: str, evaluation: dict, latency: dict | None,
                **extra) -> dict:
    """An entry for a model that ran; ``evaluation`` is :func:`coco_evaluate`'s result.

    ``extra`` sets any other field (target, quantization, file_size_bytes, macs, provenance,
    layer_errors, gmacs_per_s). Deltas are filled in by :func:`assemble`.
    """
    e = _base_entry(name, path, role, fmt)
    e.update(extra)
    e["metrics"] = {k: _clean(evaluation[k]) for k in SUMMARY_KEYS}
    e["per_class"] = {
        n: {"ap": _clean(evaluation["per_class"][n]), "ap50": _clean(evaluation["per_class_ap50"][n]),
            "delta_ap": None, "delta_ap50": None, "num_gt": evaluation["num_gt"].get(n),
            "pr_iou50": evaluation["precision_iou50"][n], "pr_mean": evaluation["precision_mean"][n]}
        for n in evaluation["per_class"]
    }
    e["latency"] = latency
    return e


def across_classes(entry: dict) -> bool:
    """True for a file whose in-graph NMS (``convert --nms`` without ``--nms-per-class``) suppresses across classes."""
    nms = entry.get("nms")
    return bool(nms) and not nms.get("per_class", False)


def latency_value(entry: dict, metric: str) -> float | None:
    part, _, key = metric.partition(".")
    return ((entry.get("latency") or {}).get(part) or {}).get(key)


def apply_thresholds(entry: dict, baseline: dict | None, thresholds: dict) -> None:
    """Fill deltas against the baseline and set status ✅/❎ (❌ entries are left alone).

    The AP drop is ``baseline AP - model AP`` on COCO AP@[.5:.95], as a fraction (0.01 = one
    point). Thresholds apply to candidates; the baseline passes whenever it runs.
    """
    if entry["status"] == "fail":
        return
    reasons: list[str] = []
    base_ok = baseline is not None and baseline["status"] != "fail" and baseline.get("metrics")
    if base_ok and entry is not baseline:
        entry["delta"] = {k: delta(entry["metrics"][k], baseline["metrics"][k]) for k in SUMMARY_KEYS}
        for n, pc in entry["per_class"].items():
            bpc = baseline["per_class"].get(n) or {}
            pc["delta_ap"] = delta(pc["ap"], bpc.get("ap"))
            pc["delta_ap50"] = delta(pc["ap50"], bpc.get("ap50"))
    if entry["role"] == "candidate":
        drop = thresholds.get("max_ap_drop")
        if drop is not None:
            d = (entry.get("delta") or {}).get("AP")
            if not base_ok:
                reasons.append("AP drop not checked: " + ("the float baseline failed" if baseline is not None
                                                           else "no float baseline given"))
            elif d is None:
                reasons.append("AP undefined (no ground truth)")
            elif -d > drop + 1e-12:
                worst = sorted(((pc["delta_ap"], n) for n, pc in entry["per_class"].items()
                                if pc["delta_ap"] is not None))[:2]
                detail = ", ".join(f"{n} {v * 100:+.2f}" for v, n in worst)
                reasons.append(f"AP dropped {-d * 100:.2f} points (allowed {drop * 100:.2f}); worst classes: {detail}")
        budget = thresholds.get("latency_budget_ms")
        if budget is not None:
            metric = thresholds.get("latency_metric") or "end_to_end.p50"
            v = latency_value(entry, metric)
            if v is None:
                reasons.append(f"latency {metric} not measured")
            elif v > budget:
                reasons.append(f"latency {metric} {v:.2f} ms over the {budget:g} ms budget")
    if reasons and any(not r.startswith("AP drop not checked") for r in reasons):
        entry["status"], entry["status_icon"] = "miss", STATUS_ICONS["miss"]
    entry["reasons"] = reasons


def assemble(models: list[dict], dataset: dict, thresholds: dict, command: str | None = None) -> dict:
    """Build the full report dict: deltas, statuses, summary and exit code.

    Args:
        models: entries from :func:`model_entry` / :func:`failed_entry`; at most one with role
            "baseline" (listed first in the report).
        dataset: ``{"path", "split", "num_images", "class_names"}``.
        thresholds: ``{"device", "max_ap_drop", "latency_budget_ms", "latency_metric"}``.
        command: the command line, for the record.

    Returns:
        The report; ``summary.exit_code`` is 1 when any model missed a threshold or failed.
    """
    from edgedet import __version__

    th = {"device": None, "max_ap_drop": None, "latency_budget_ms": None, "latency_metric": "end_to_end.p50"}
    th.update({k: v for k, v in thresholds.items() if v is not None})
    models = sorted(models, key=lambda m: m["role"] != "baseline")
    baseline = next((m for m in models if m["role"] == "baseline"), None)
    for m in models:
        apply_thresholds(m, baseline, th)
    recall = next((m for m in models if m.get("per_class")), None)
    n = {s: sum(m["status"] == s for m in models) for s in STATUS_ICONS}
    from edgedet.runtime.report.recommend import recommend

    shipped = recommend(models, th)
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "tool": {"name": "edgedet", "version": __version__, "command": command},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "dataset": dataset,
        "thresholds": th,
        "host": host_info(),
        "baseline": baseline["name"] if baseline else None,
        "recall_thresholds": [round(i / 100, 2) for i in range(101)] if recall else [],
        "models": models,
        "summary": {"passed": n["pass"], "missed": n["miss"], "failed": n["fail"],
                    "exit_code": 1 if n["miss"] or n["fail"] else 0},
        "recommendation": shipped,
    }


def write_report(report: dict, out_dir: str | os.PathLike, html: bool = True) -> dict[str, Path]:
    """Check the report against the schema and write report.json, report.md and report.html.

    Raises:
        ValueError: the report does not match the schema (a bug, not a user error).
    """
    from edgedet.runtime.report.md import render_markdown

    errors = check_schema(report)
    if errors:
        raise ValueError("report.json does not match its schema: " + "; ".join(errors[:5]))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md"}
    atomic_write_text(paths["json"], json.dumps(report, indent=1, ensure_ascii=False))
    atomic_write_text(paths["md"], render_markdown(report))
    if html:
        from edgedet.runtime.report.html import render_html

        paths["html"] = out / "report.html"
        atomic_write_text(paths["html"], render_html(report))
    elif (out / "report.html").exists():
        (out / "report.html").unlink()  # an earlier run's page would disagree with this report
    return paths
