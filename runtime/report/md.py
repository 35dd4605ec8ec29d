"""``report.md``: the validation report as GitHub-flavoured Markdown tables.

The table builders return ``(header, rows)`` of plain strings so the HTML page shows exactly
the same numbers (``report_html`` renders the same tables).
"""
from __future__ import annotations

from edgedet.files import fmt_size
from edgedet.runtime.report.build import across_classes
from edgedet.runtime.report.stats import fmt_ms, fmt_pct

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
LAYER_ROWS_SHOWN = 15
LAYER_TITLES = {"diagnosis": "Per-layer int8 error (quantize diagnosis)", "tensors": "Per-tensor int8 error vs fp32 TFLite",
                "outputs": "Per-output error vs float"}


def _lat(model: dict, part: str, key: str) -> float | None:
    lat = model.get("latency") or {}
    return (lat.get(part) or {}).get(key)


def _num(v, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.{digits}f}"
    return str(v)


def _vs_twin(m: dict) -> str:
    """`` (quantization −0.12 vs its float twin)`` for a QAT model whose twin ran; `` (3 layers float)``
    for a mixed int8 model from ``convert --max-drop`` (its latency columns show what they cost)."""
    d = ((m.get("vs_twin") or {}).get("delta") or {}).get("AP")
    note = "" if d is None else f" (quantization {fmt_pct(d, 2, signed=True)} vs its float twin)"
    if across_classes(m):
        note += " (in-graph NMS across classes)"
    floats = ((m.get("quantization") or {}).get("budget") or {}).get("float_layers")
    return note + (f" ({len(floats)} layer{'s' if len(floats) != 1 else ''} float)" if floats else "")


def summary_table(report: dict) -> tuple[list[str], list[list[str]]]:
    header = ["", "Model", "Target", "AP", "ΔAP", "AP50", "ΔAP50", "AP75", "APs", "APm", "APl",
              "invoke p50 ms", "e2e p50 ms", "e2e p99 ms", "Size", "GMAC/s", "Backend"]
    rows = []
    for m in report["models"]:
        met, d = m.get("metrics") or {}, m.get("delta") or {}
        base = m["role"] == "baseline"
        rows.append([
            m["status_icon"], m["name"] + (" — baseline" if base else "") + _vs_twin(m), m.get("target") or "-",
            fmt_pct(met.get("AP"), 2), "" if base else fmt_pct(d.get("AP"), 2, signed=True),
            fmt_pct(met.get("AP50"), 2), "" if base else fmt_pct(d.get("AP50"), 2, signed=True),
            fmt_pct(met.get("AP75"), 2), fmt_pct(met.get("APs"), 2), fmt_pct(met.get("APm"), 2),
            fmt_pct(met.get("APl"), 2),
            fmt_ms(_lat(m, "invoke", "p50")), fmt_ms(_lat(m, "end_to_end", "p50")),
            fmt_ms(_lat(m, "end_to_end", "p99")), fmt_size(m.get("file_size_bytes")),
            "-" if m.get("gmacs_per_s") is None else f"{m['gmacs_per_s']:.2f}",
            (m.get("provenance") or {}).get("backend") or "-",
        ])
    return header, rows


def per_class_table(report: dict) -> tuple[list[str], list[list[str]]]:
    """Rows per class: ground-truth count, then AP (ΔAP vs float) for every model that ran."""
    models = [m for m in report["models"] if m.get("per_class")]
    header = ["Class", "#GT"] + [m["name"] for m in models]
    rows = []
    for name in report["dataset"]["class_names"]:
        gt = next((m["per_class"][name].get("num_gt") for m in models if name in m["per_class"]), None)
        row = [name, "-" if gt is None else str(gt)]
        for m in models:
            pc = m["per_class"].get(name) or {}
            cell = fmt_pct(pc.get("ap"), 2)
            if m["role"] != "baseline" and pc.get("delta_ap") is not None:
                cell += f" ({fmt_pct(pc['delta_ap'], 2, signed=True)})"
            row.append(cell)
        rows.append(row)
    return header, rows


def latency_table(report: dict) -> tuple[list[str], list[list[str]]]:
    header = ["Model", "init ms", "first run ms", "invoke p50 / p90 / p99", "end-to-end p50 / p90 / p99",
              "pre p50", "invoke p50", "post p50", "runs"]
    rows = []
    for m in report["models"]:
        if not m.get("latency"):
            continue
        lat = m["latency"]

        def trio(part):
            return " / ".join(fmt_ms(_lat(m, part, k)) for k in ("p50", "p90", "p99"))

        rows.append([m["name"], fmt_ms(lat.get("init_ms"), 1), fmt_ms(lat.get("first_run_ms"), 1),
                     trio("invoke"), trio("end_to_end"), fmt_ms(_lat(m, "pre", "p50")),
                     fmt_ms(_lat(m, "invoke", "p50")), fmt_ms(_lat(m, "post", "p50")),
                     str((lat.get("end_to_end") or {}).get("n", 0))])
    return header, rows


def provenance_table(report: dict) -> tuple[list[str], list[list[str]]]:
    header = ["Model", "File", "Format", "Quantization", "Backend", "Version", "Delegate", "Threads",
              "Device", "MACs"]
    rows = []
    for m in report["models"]:
        p = m.get("provenance") or {}
        q = (m.get("quantization") or {}).get("method") or "-"
        rows.append([m["name"], m["path"], m.get("format") or "-", q, p.get("backend") or "-",
                     p.get("backend_version") or "-", p.get("delegate") or "-",
                     "-" if p.get("threads") is None else str(p["threads"]), p.get("device") or "-",
                     "-" if m.get("macs") is None else f"{m['macs'] / 1e9:.3f} G"])
    return header, rows


def layer_table(table: dict, limit: int = LAYER_ROWS_SHOWN) -> tuple[list[str], list[list[str]]]:
    cols = list(table["columns"])
    rows = [[_num(r.get(c)) for c in cols] for r in table["rows"][:limit]]
    return cols, rows


def md_table(header: list[str], rows: list[list[str]]) -> str:
    def esc(s: str) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(esc(h) for h in header) + " |",
           "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def thresholds_line(report: dict) -> str:
    t = report["thresholds"]
    parts = []
    if t.get("max_ap_drop") is not None:
        parts.append(f"max AP drop {t['max_ap_drop'] * 100:.2f} points")
    if t.get("latency_budget_ms") is not None:
        parts.append(f"latency budget {t['latency_budget_ms']:g} ms ({t['latency_metric']})")
    where = f"device profile `{t['device']}`" if t.get("device") else "no device profile"
    line = f"{where}: " + (", ".join(parts) if parts else "no thresholds (every model that runs passes)")
    machine = (report.get("host") or {}).get("machine")
    if t.get("device_arch") and machine:
        from edgedet.devices import arch_of  # noqa: PLC0415

        if arch_of(machine) != t["device_arch"]:
            line += (f" (⚠️ the profile describes an {t['device_arch']} device, measured on this {arch_of(machine)} "
                     "host: the figures are the host's, not the device's)")
    return line


def host_line(report: dict) -> str:
    h = report["host"]
    thr = {True: "**throttled**", False: "not throttled", None: "throttling not reported by the OS"}[h.get("throttled")]
    detail = f" ({h['throttle_detail']})" if h.get("throttle_detail") else ""
    arch = f" ({h['machine']})" if h.get("machine") else ""
    if h.get("emulation"):
        arch += f", **emulated by {h['emulation']}**: timings mean nothing"
    return (f"{h.get('cpu_model') or '?'}{arch}, {h.get('num_cpus') or '?'} CPUs, {h.get('os')}, "
            f"Python {h.get('python')}; {thr}{detail}")


def problems(report: dict) -> list[str]:
    out = []
    for m in report["models"]:
        if m["status"] == "fail":
            out.append(f"- ❌ **{m['name']}** failed to run: `{m.get('error')}`")
        elif m["status"] == "miss":
            out.append(f"- ❎ **{m['name']}**: " + "; ".join(m["reasons"]))
    return out


def render_markdown(report: dict) -> str:
    """The whole ``report.md`` text."""
    ds, s = report["dataset"], report["summary"]
    lines = [
        "# edgedet validation report", "",
        f"- Data: `{ds['path']}`, split `{ds['split']}`, {ds['num_images']} images, "
        f"classes: {', '.join(ds['class_names'])}",
        *([f"- Dataset picture (counts, box sizes, samples): [{ds['plot']}]({ds['plot']})"] if ds.get("plot") else []),
        f"- Thresholds: {thresholds_line(report)}",
        f"- Host: {host_line(report)}",
        f"- Created {report['created']} by edgedet {report['tool']['version']}"
        + (f": `{report['tool']['command']}`" if report["tool"].get("command") else ""),
        f"- Result: {s['passed']} ✅ passed, {s['missed']} ❎ missed a threshold, {s['failed']} ❌ failed "
        f"(exit code {s['exit_code']})",
        "", "AP values are COCO AP × 100; Δ is against the float baseline, in points.", "",
        "## Summary", "", md_table(*summary_table(report)), "",
    ]
    from edgedet.runtime.report.recommend import markdown as ship_section

    lines += ship_section(report.get("recommendation")) if "recommendation" in report else []
    probs = problems(report)
    if probs:
        lines += ["## Problems", ""] + probs + [""]
    lines += ["## Per-class AP (Δ vs float)", "", md_table(*per_class_table(report)), ""]
    lines += ["## Latency (ms)", "",
              "init = model load and interpreter setup; first run is excluded from the percentiles; "
              "end-to-end = pre-processing + invoke + post-processing (decode + NMS).", "",
              md_table(*latency_table(report)), ""]
    lines += ["## Provenance", "", md_table(*provenance_table(report)), ""]
    for m in report["models"]:
        t = m.get("layer_errors")
        if not t or not t.get("rows"):
            continue
        title = LAYER_TITLES.get(t.get("kind"), "Per-layer error")
        lines += [f"## {title}: {m['name']}", "", f"Source: `{t['source']}`"
                  + (f". {t['note']}" if t.get("note") else ""), "",
                  md_table(*layer_table(t)), ""]
        if len(t["rows"]) > LAYER_ROWS_SHOWN:
            lines += [f"({len(t['rows']) - LAYER_ROWS_SHOWN} more rows in report.json)", ""]
    return "\n".join(lines)
