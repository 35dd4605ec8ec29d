"""``edgedet report merge``: validation reports of the same files and images from several devices in one view.

int8 kernels round differently on different CPUs (XNNPACK picks its kernels by CPU features), so
an AP drop measured on the workstation does not speak for the board. Validate on each device,
then merge: each model's AP and ΔAP per device side by side, latency per device, and what each
device ran (architecture, CPU, runtime version, kernels).

Models are matched by the sha256 of their files, never by name; reports of different files or
of different images/labels are refused. A QAT run's float twin (a Keras row that only the host
with TensorFlow evaluates) is no file a device runs, so it is left out, and the merge says so.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

from edgedet.errors import DataError
from edgedet.runtime.report.schema import REPORT_SCHEMA_VERSION, check_schema

MERGED_KIND = "edgedet-merged-report"
MERGED_VERSION = 1


def load_report(path: str) -> dict:
    """A validation ``report.json`` (or the folder holding one), checked against the schema."""
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    try:
        report = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{p}: no such report (give a report.json or the folder edgedet validate wrote)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{p}: not a readable JSON report ({exc})") from None
    if isinstance(report, dict) and report.get("kind") == MERGED_KIND:
        raise DataError(f"{p}: already a merged report; merge the per-device report.json files instead")
    if not isinstance(report, dict) or report.get("schema_version") != REPORT_SCHEMA_VERSION:
        got = report.get("schema_version") if isinstance(report, dict) else None
        raise DataError(f"{p}: not an edgedet validation report of schema version {REPORT_SCHEMA_VERSION} "
                        f"(found {got!r})")
    errors = check_schema(report)
    if errors:
        raise DataError(f"{p}: report.json does not match its schema ({errors[0]})")
    report["_source"] = str(p)
    return report


def _check_same_data(reports: list[dict]) -> None:
    first = reports[0]
    d0 = first["dataset"]
    for r in reports[1:]:
        d = r["dataset"]
        where = f"{first['_source']} and {r['_source']}"
        for key in ("split", "num_images", "class_names"):
            if d.get(key) != d0.get(key):
                raise DataError(f"{where} are of different datasets: {key} {d0.get(key)!r} vs {d.get(key)!r}")
        f0, f = d0.get("fingerprint"), d.get("fingerprint")
        if not f0 or not f:
            old = first["_source"] if not f0 else r["_source"]
            raise DataError(f"{old} has no dataset fingerprint (written by an older edgedet); validate again")
        if f0 != f:
            raise DataError(f"{where} are of different datasets: same size and classes but other images or "
                            f"labels (fingerprint {f0[:12]} vs {f[:12]})")


def _check_same_files(reports: list[dict]) -> None:
    """Every report must hold the same model files (by sha256), each once."""
    sets = []
    for r in reports:
        hashes = {}
        for m in r["models"]:
            h = m.get("sha256")
            if not h:
                raise DataError(f"{r['_source']}: model {m['name']} has no sha256 (written by an older edgedet, "
                                "or the file was unreadable); validate again")
            if h in hashes:
                raise DataError(f"{r['_source']}: {m['name']} and {hashes[h]} are the same file")
            hashes[h] = m["name"]
        sets.append(hashes)
    for r, hashes in zip(reports[1:], sets[1:]):
        # the sha256 prefix tells apart files of the same name (a QAT and a PTQ lite0_tflite-int8.tflite)
        only_a = [f"{n} ({h[:12]})" for h, n in sets[0].items() if h not in hashes]
        only_b = [f"{n} ({h[:12]})" for h, n in hashes.items() if h not in sets[0]]
        if only_a or only_b:
            what = "; ".join(s for s in (
                f"only in {reports[0]['_source']}: {', '.join(only_a)}" if only_a else "",
                f"only in {r['_source']}: {', '.join(only_b)}" if only_b else "") if s)
            raise DataError(f"reports of different files (matched by sha256): {what}")


def device_names(reports: list[dict], names: list[str] | None = None) -> list[str]:
    """Column names: given ones, else the device profile or architecture, made unique."""
    if names:
        if len(names) != len(reports):
            raise DataError(f"--names: {len(names)} names for {len(reports)} reports")
        twice = next((n for n in names if names.count(n) > 1), None)
        if twice:
            raise DataError(f"--names: {twice!r} given twice; each device's column needs its own name")
        return list(names)
    out = []
    for r in reports:
        h = r["host"]
        base = r["thresholds"].get("device") or h.get("machine") or "device"
        if h.get("emulation"):
            base += f" ({h['emulation']})"
        out.append(base)
    for i, n in enumerate(out):
        if out.count(n) > 1:
            out[i] = f"{n} #{out[:i + 1].count(n)}"
    return out


def _kernels(report: dict) -> str:
    """What ran the models: backend, version, delegate (LiteRT's XNNPACK ships inside LiteRT and
    reports no version of its own, so LiteRT's version names it) and the CPU features it uses."""
    seen = []
    for m in report["models"]:
        p = m.get("provenance") or {}
        if not p.get("backend"):
            continue
        text = f"{p['backend']} {p.get('backend_version') or '?'}"
        if p.get("delegate"):
            text += f" + {p['delegate']}"
        elif p["backend"] in ("litert", "tflite-runtime"):
            text += " + XNNPACK (its default CPU delegate)"
        if text not in seen:
            seen.append(text)
    return ", ".join(seen) or "-"


def _device_entry(name: str, r: dict) -> dict:
    h = r["host"]
    return {
        "name": name, "report": r["_source"], "created": r["created"], "edgedet": r["tool"]["version"],
        "machine": h.get("machine"), "cpu_model": h.get("cpu_model"), "num_cpus": h.get("num_cpus"),
        "cpu_features": h.get("cpu_features"), "emulation": h.get("emulation"), "os": h.get("os"),
        "python": h.get("python"), "numpy": h.get("numpy"), "throttled": h.get("throttled"),
        "kernels": _kernels(r), "thresholds": r["thresholds"],
    }


def _on_device(m: dict) -> dict:
    lat = m.get("latency") or {}

    def get(part, key):
        return (lat.get(part) or {}).get(key)

    pc = {n: {"ap": v.get("ap"), "delta_ap": v.get("delta_ap")} for n, v in (m.get("per_class") or {}).items()}
    return {
        "name": m["name"], "status": m["status"], "status_icon": m["status_icon"], "reasons": m["reasons"],
        "error": m["error"], "metrics": m.get("metrics"), "delta": m.get("delta"), "per_class": pc,
        "latency": {"init_ms": lat.get("init_ms"), "invoke_p50": get("invoke", "p50"),
                    "end_to_end_p50": get("end_to_end", "p50"), "end_to_end_p99": get("end_to_end", "p99")},
        "provenance": m.get("provenance"),
    }


def merge_reports(paths: list[str], names: list[str] | None = None) -> dict:
    """The merged report of two or more validation reports (see the module docstring).

    Raises:
        DataError: fewer than two reports, unreadable ones, or reports of different datasets or files.
    """
    if len(paths) < 2:
        raise DataError("give at least two report.json files to merge")
    from edgedet import __version__

    reports = [load_report(p) for p in paths]
    seen = [Path(r["_source"]).resolve() for r in reports]
    twice = next((r["_source"] for r, p in zip(reports, seen) if seen.count(p) > 1), None)
    if twice:
        raise DataError(f"{twice}: given twice; merge the reports of different devices")
    left_out = []
    for r in reports:
        left_out += [m["name"] for m in r["models"] if m.get("role") == "twin" and m["name"] not in left_out]
        r["models"] = [m for m in r["models"] if m.get("role") != "twin"]
    _check_same_data(reports)
    _check_same_files(reports)
    labels = device_names(reports, names)
    by_hash = [{m["sha256"]: m for m in r["models"]} for r in reports]
    models = []
    for m in reports[0]["models"]:
        runs = [_on_device(idx[m["sha256"]]) for idx in by_hash]
        ap0 = (runs[0]["metrics"] or {}).get("AP")
        for run in runs:  # the same file's AP on this device minus on the first one
            ap = (run["metrics"] or {}).get("AP")
            run["ap_vs_first"] = None if ap is None or ap0 is None else ap - ap0
        models.append({
            "sha256": m["sha256"], "role": m["role"], "format": m["format"], "target": m.get("target"),
            "quantization": m.get("quantization"), "file_size_bytes": m.get("file_size_bytes"),
            "name": m["name"], "devices": runs,
        })
    ds = dict(reports[0]["dataset"])
    ds["paths"] = [r["dataset"]["path"] for r in reports]
    warnings = _host_warnings(reports, labels)
    return {
        "kind": MERGED_KIND, "version": MERGED_VERSION,
        "tool": {"name": "edgedet", "version": __version__},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "dataset": ds,
        "devices": [_device_entry(n, r) for n, r in zip(labels, reports)],
        "models": models,
        "left_out": left_out,
        "warnings": warnings,
        "sources": [r["_source"] for r in reports],
    }


def _host_warnings(reports: list[dict], labels: list[str]) -> list[str]:
    """Reports that cannot be what their column says: made on another architecture than their
    device profile's, or two columns from the same kind of host (differences then are run to run)."""
    out, seen = [], {}
    for label, r in zip(labels, reports):
        h, dev = r.get("host") or {}, r["thresholds"].get("device")
        try:
            from edgedet.devices import arch_of, load_profile  # noqa: PLC0415

            where = r["thresholds"].get("device_file")
            prof = load_profile(where if where and os.path.isfile(where) else dev) if dev else None
        except Exception:  # noqa: BLE001 - a profile this machine does not have: nothing to compare
            prof = None
        if prof is not None and prof.arch and h.get("machine") and arch_of(h["machine"]) != prof.arch:
            out.append(f"{label}: made on {arch_of(h['machine'])}, where profile {dev} describes an {prof.arch} device")
        key = (h.get("machine"), h.get("cpu_model"), tuple(h.get("cpu_features") or ()), h.get("emulation"))
        if key in seen:
            out.append(f"{seen[key]} and {label} ran on the same kind of host ({h.get('machine')}, {h.get('cpu_model')}): "
                       "their differences are run to run, not between devices")
        seen.setdefault(key, label)
    return out


def write_merged(merged: dict, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write report.json, report.md and report.html (tables and hand-drawn SVG: no matplotlib)."""
    from edgedet.files import atomic_write_text
    from edgedet.runtime.report.merge_render import render_merged_html, render_merged_md

    out = Path(out_dir)
    if str((out / "report.json").resolve()) in {str(Path(p).resolve()) for p in merged.get("sources", [])}:
        raise DataError(f"{out}: holds one of the reports being merged; give another --out folder")
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md", "html": out / "report.html"}
    atomic_write_text(paths["json"], json.dumps(merged, indent=1, ensure_ascii=False))
    atomic_write_text(paths["md"], render_merged_md(merged))
    atomic_write_text(paths["html"], render_merged_html(merged))
    return paths
