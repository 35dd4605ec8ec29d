"""Markdown and HTML of a merged report (:mod:`edgedet.runtime.report.merge`).

The HTML page is self-contained; its one chart (AP per model and device) is SVG written here,
so merging needs no plotting library on the device.
"""
from __future__ import annotations

import base64

from edgedet.files import fmt_size
from edgedet.runtime.report.html import _CSS, _SCRIPT_HEAD, _SCRIPT_TAIL, _e, html_table
from edgedet.runtime.report.md import md_table
from edgedet.runtime.report.stats import fmt_ms, fmt_pct

PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")


def _ap(run: dict, key: str = "AP") -> float | None:
    return (run.get("metrics") or {}).get(key)


def accuracy_table(merged: dict) -> tuple[list[str], list[list[str]]]:
    """Per model: status, AP and ΔAP (vs that device's float baseline) per device, then each
    device's AP minus the first device's for the very same file."""
    devs = [d["name"] for d in merged["devices"]]
    header = ["Status", "Model", "Target"]
    for n in devs:
        header += [f"AP {n}", f"ΔAP {n}"]
    header += [f"AP {n} − {devs[0]}" for n in devs[1:]]
    rows = []
    for m in merged["models"]:
        base = m["role"] == "baseline"
        row = [" ".join(r["status_icon"] for r in m["devices"]), m["name"] + (" — baseline" if base else ""),
               m.get("target") or "-"]
        for r in m["devices"]:
            row += [fmt_pct(_ap(r), 2), "" if base else fmt_pct((r.get("delta") or {}).get("AP"), 2, signed=True)]
        row += [fmt_pct(r["ap_vs_first"], 2, signed=True) for r in m["devices"][1:]]
        rows.append(row)
    return header, rows


def latency_table(merged: dict) -> tuple[list[str], list[list[str]]]:
    devs = [d["name"] for d in merged["devices"]]
    header = ["Model", "Size"] + [f"e2e p50 ms {n}" for n in devs] + [f"invoke p50 ms {n}" for n in devs]
    rows = []
    for m in merged["models"]:
        lat = [r.get("latency") or {} for r in m["devices"]]
        rows.append([m["name"], fmt_size(m.get("file_size_bytes"))] + [fmt_ms(x.get("end_to_end_p50")) for x in lat]
                    + [fmt_ms(x.get("invoke_p50")) for x in lat])
    return header, rows


def per_class_table(merged: dict) -> tuple[list[str], list[list[str]]]:
    """Rows per model and class: AP per device (ΔAP vs that device's float baseline)."""
    devs = [d["name"] for d in merged["devices"]]
    header = ["Model", "Class"] + [f"AP {n}" for n in devs]
    rows = []
    for m in merged["models"]:
        for cls in merged["dataset"]["class_names"]:
            cells = []
            for r in m["devices"]:
                pc = (r.get("per_class") or {}).get(cls) or {}
                cell = fmt_pct(pc.get("ap"), 2)
                if m["role"] != "baseline" and pc.get("delta_ap") is not None:
                    cell += f" ({fmt_pct(pc['delta_ap'], 2, signed=True)})"
                cells.append(cell)
            rows.append([m["name"], cls] + cells)
    return header, rows


def devices_table(merged: dict) -> tuple[list[str], list[list[str]]]:
    header = ["Device", "Architecture", "CPU", "CPUs", "Kernel CPU features", "Runtime and kernels", "OS",
              "Python / numpy", "edgedet", "Report"]
    rows = []
    for d in merged["devices"]:
        arch = (d.get("machine") or "?") + (f" ({d['emulation']}: timings mean nothing)"
                                            if d.get("emulation") else "")
        rows.append([d["name"], arch, d.get("cpu_model") or "?", str(d.get("num_cpus") or "?"),
                     " ".join(d.get("cpu_features") or []) or "-", d.get("kernels") or "-", d.get("os") or "?",
                     f"{d.get('python') or '?'} / {d.get('numpy') or '?'}", d.get("edgedet") or "?", d["report"]])
    return header, rows


def problems(merged: dict) -> list[tuple[str, str, str]]:
    """``(device, model, text)`` for every miss or failure."""
    out = []
    for m in merged["models"]:
        for d, r in zip(merged["devices"], m["devices"]):
            if r["status"] == "fail":
                out.append((d["name"], m["name"], f"failed to run: {r.get('error')}"))
            elif r["status"] == "miss":
                out.append((d["name"], m["name"], "; ".join(r["reasons"])))
    return out


def _intro(merged: dict) -> list[str]:
    ds = merged["dataset"]
    return [f"Data: split `{ds['split']}`, {ds['num_images']} images, classes: {', '.join(ds['class_names'])} "
            f"(fingerprint `{(ds.get('fingerprint') or '')[:12]}`; the same images and labels on every device)",
            f"Devices: {', '.join(d['name'] for d in merged['devices'])}; models matched by file sha256"
            + (f"; left out (host-only Keras rows): {', '.join(merged['left_out'])}" if merged.get("left_out") else ""),
            f"Created {merged['created']} by edgedet {merged['tool']['version']}"] + [
            f"⚠️ {w}" for w in merged.get("warnings") or []]


def render_merged_md(merged: dict) -> str:
    lines = ["# edgedet validation report: per device", ""] + [f"- {s}" for s in _intro(merged)] + [
        "", "AP values are COCO AP × 100; ΔAP is against the float baseline on the same device, in points; "
        "the last columns compare each device with the first for the same file.", "",
        "## Accuracy per device", "", md_table(*accuracy_table(merged)), ""]
    probs = problems(merged)
    if probs:
        lines += ["## Problems", ""] + [f"- **{m}** on {d}: {t}" for d, m, t in probs] + [""]
    lines += ["## Latency per device (ms)", "", md_table(*latency_table(merged)), "",
              "## Devices", "", md_table(*devices_table(merged)), "",
              "## Per-class AP per device (Δ vs float)", "", md_table(*per_class_table(merged)), ""]
    return "\n".join(lines)


def ap_bars_svg(merged: dict, width: int = 760, height: int = 260) -> str:
    """Grouped bars: AP × 100 of each model (groups) on each device (colours), as SVG text."""
    models, devs = merged["models"], merged["devices"]
    left, right, top, bottom = 46, 12, 28, 32
    pw, ph = width - left - right, height - top - bottom
    vals = [[_ap(r) for r in m["devices"]] for m in models]
    vmax = max([v for row in vals for v in row if v is not None] + [0.01]) * 100
    vmax = min(100.0, max(1.0, vmax * 1.1))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>']
    for k in range(5):  # grid and y ticks
        v = vmax * k / 4
        y = top + ph - ph * k / 4
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 5}" y="{y + 4:.1f}" text-anchor="end">{v:.0f}</text>')
    out.append(f'<text x="12" y="{top + ph / 2:.0f}" transform="rotate(-90 12 {top + ph / 2:.0f})" '
               f'text-anchor="middle">AP × 100</text>')
    group = pw / max(1, len(models))
    bar = group * 0.8 / max(1, len(devs))
    for i, (m, row) in enumerate(zip(models, vals)):
        x0 = left + group * i + group * 0.1
        for j, v in enumerate(row):
            if v is None:
                continue
            h = ph * min(v * 100, vmax) / vmax
            out.append(f'<rect x="{x0 + bar * j:.1f}" y="{top + ph - h:.1f}" width="{bar * 0.92:.1f}" '
                       f'height="{h:.1f}" fill="{PALETTE[j % len(PALETTE)]}"><title>{_e(m["name"])} on '
                       f'{_e(devs[j]["name"])}: {v * 100:.2f}</title></rect>')
        label = m["name"] if len(m["name"]) <= 28 else m["name"][:27] + "…"
        out.append(f'<text x="{x0 + group * 0.4:.1f}" y="{top + ph + 14}" text-anchor="middle">{_e(label)}</text>')
    for j, d in enumerate(devs):  # legend
        x = left + 10 + j * 170
        out.append(f'<rect x="{x}" y="8" width="10" height="10" fill="{PALETTE[j % len(PALETTE)]}"/>'
                   f'<text x="{x + 14}" y="17">{_e(d["name"][:24])}</text>')
    out.append("</svg>")
    return "".join(out)


def render_merged_html(merged: dict) -> str:
    svg = base64.b64encode(ap_bars_svg(merged).encode()).decode("ascii")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        "<title>edgedet validation report: per device</title>",
        f"<style>{_CSS}</style><script>{_SCRIPT_HEAD}</script></head><body>",
        "<h1>edgedet validation report: per device</h1><div class='meta'>",
        "<br>".join(_e(s).replace("`", "") for s in _intro(merged)), "</div>",
        "<p class='meta'>AP values are COCO AP × 100; ΔAP is against the float baseline on the same device, in "
        "points; the last columns compare each device with the first for the same file.</p>",
        "<h2>Accuracy per device</h2>", html_table(*accuracy_table(merged)),
        f"<img class='plot' id='fig-ap_per_device' alt='AP per model and device' "
        f"src='data:image/svg+xml;base64,{svg}'>",
    ]
    probs = problems(merged)
    if probs:
        parts.append("<h2>Problems</h2><ul>" + "".join(f"<li><b>{_e(m)}</b> on {_e(d)}: {_e(t)}</li>"
                                                       for d, m, t in probs) + "</ul>")
    parts += ["<h2>Latency per device (ms)</h2>", html_table(*latency_table(merged)),
              "<h2>Devices</h2>", html_table(*devices_table(merged)),
              "<h2>Per-class AP per device (Δ vs float)</h2>", html_table(*per_class_table(merged)),
              "<div id='render-status' hidden data-ok='pending'></div>",
              f"<script>{_SCRIPT_TAIL}</script></body></html>"]
    return "\n".join(parts)
