"""``report.html``: one self-contained page (inline CSS, base64 PNG plots, no external requests).

A small inline script records script errors and images that failed to decode into
``#render-status`` (``data-ok="1"`` when all is well), which the headless-Chromium test reads.
"""
from __future__ import annotations

import html

from edgedet.runtime.report import md
from edgedet.runtime.report.plots import make_figures
from edgedet.runtime.report.recommend import headline

_CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1200px;
color:#222;padding:0 16px}
h1{font-size:1.5em;margin-bottom:4px}h2{font-size:1.15em;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:3px}
table{border-collapse:collapse;font-size:12.5px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f4f4f4}td:nth-child(-n+2){text-align:left}
tr.fail td{background:#fdecea}tr.miss td{background:#fff6e0}
.neg{color:#b3261e;font-weight:600}.pos{color:#1e7d32}
.meta{font-size:13px;color:#444;line-height:1.55}
.plot{max-width:100%;border:1px solid #eee;margin:6px 0}
.bar{display:inline-block;height:9px;min-width:1px;background:#e4572e;vertical-align:middle;margin-right:5px}
.wide{overflow-x:auto}
code{background:#f4f4f4;padding:1px 4px;border-radius:3px}
"""

# Registered in <head> so it sees errors from everything after it, including <img> decode errors
# (those do not bubble, hence the capture phase).
_SCRIPT_HEAD = """
window.__edgedetErrors = [];
window.addEventListener('error', function (e) {
  var t = e.target && e.target.id ? 'resource ' + e.target.id : String(e.message || 'error');
  window.__edgedetErrors.push(t);
}, true);
"""
_SCRIPT_TAIL = """
window.addEventListener('load', function () {
  var imgs = document.querySelectorAll('img.plot'), bad = [];
  for (var i = 0; i < imgs.length; i++) {
    if (!(imgs[i].complete && imgs[i].naturalWidth > 0)) bad.push(imgs[i].id);
  }
  var s = document.getElementById('render-status');
  s.setAttribute('data-images', String(imgs.length));
  s.setAttribute('data-broken', bad.join(','));
  s.setAttribute('data-errors', window.__edgedetErrors.join('|'));
  s.setAttribute('data-ok', bad.length === 0 && window.__edgedetErrors.length === 0 ? '1' : '0');
});
"""


def _e(s) -> str:
    return html.escape(str(s), quote=True)


def _cell(c: str) -> str:
    """A table cell, coloured when it holds a signed delta like ``-1.23`` or ``41.0 (+0.20)``."""
    text = str(c)
    cls = ""
    if "(-" in text or (text.startswith("-") and text[1:2].isdigit()):
        cls = "neg"
    elif "(+" in text or (text.startswith("+") and text[1:2].isdigit()):
        cls = "pos"
    return f'<td class="{cls}">{_e(text)}</td>' if cls else f"<td>{_e(text)}</td>"


def html_table(header, rows, row_classes=None) -> str:
    out = ["<div class='wide'><table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr></thead><tbody>"]
    for i, r in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        out.append(f"<tr{cls}>" + "".join(_cell(c) for c in r) + "</tr>")
    out.append("</tbody></table></div>")  # scrolls sideways rather than run off the page
    return "".join(out)


def _bar_key(t: dict) -> str | None:
    """The error measure a layer table's rows are sorted by, drawn as a bar."""
    cols = list(t["columns"])
    numeric = [c for c in cols if c not in ("rank", "index") and any(isinstance(r.get(c), (int, float)) for r in t["rows"])]
    return next((c for c in ("rmse_over_scale", "rel_rmse") if c in numeric), numeric[0] if numeric else None)


def _bar_tops(report: dict) -> dict[str, float]:
    """The largest value of each bar measure over the whole report: one scale for every table, so an
    fp32 file's 3e-6 draws a dot where an int8 file's 0.3 draws a full bar."""
    tops: dict[str, float] = {}
    for m in report["models"]:
        t = m.get("layer_errors")
        key = _bar_key(t) if t and t.get("rows") else None
        if key:
            top = max((abs(float(r.get(key) or 0)) for r in t["rows"]), default=0.0)
            tops[key] = max(tops.get(key, 0.0), top)
    return tops


def _layer_section(m: dict, tops: dict[str, float]) -> str:
    t = m["layer_errors"]
    title = md.LAYER_TITLES.get(t.get("kind"), "Per-layer error")
    cols = list(t["columns"])
    key = _bar_key(t)
    top = tops.get(key, 0.0) if key else 0.0
    rows_html = []
    for r in t["rows"][: md.LAYER_ROWS_SHOWN * 2]:
        cells = []
        for c in cols:
            v = r.get(c)
            text = _e(md._num(v))
            if c == key and isinstance(v, (int, float)) and top > 0:
                text = f'<span class="bar" style="width:{int(80 * abs(v) / top)}px"></span>{text}'
            cells.append(f"<td>{text}</td>")
        rows_html.append("<tr>" + "".join(cells) + "</tr>")
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    note = f" {_e(t['note'])}" if t.get("note") else ""
    return (f"<h2>{title}: {_e(m['name'])}</h2><p class='meta'>Source: <code>{_e(t['source'])}</code>.{note}</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows_html)}</tbody></table>")


def render_html(report: dict) -> str:
    """The whole ``report.html`` page."""
    ds, s = report["dataset"], report["summary"]
    status_cls = [{"fail": "fail", "miss": "miss"}.get(m["status"], "") for m in report["models"]]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        f"<title>edgedet validation report: {_e(ds['path'])}</title>",
        f"<style>{_CSS}</style><script>{_SCRIPT_HEAD}</script></head><body>",
        "<h1>edgedet validation report</h1><div class='meta'>",
        f"Data: <code>{_e(ds['path'])}</code>, split <code>{_e(ds['split'])}</code>, {ds['num_images']} images, "
        f"classes: {_e(', '.join(ds['class_names']))}<br>",
        (f"Dataset picture (counts, box sizes, samples): <a id='data-plot' href='{_e(ds['plot'])}'>{_e(ds['plot'])}</a><br>"
         if ds.get("plot") else ""),
        f"Thresholds: {_e(md.thresholds_line(report).replace('`', ''))}<br>",
        f"Host: {_e(md.host_line(report).replace('**', ''))}<br>",
        f"Created {_e(report['created'])} by edgedet {_e(report['tool']['version'])}"
        + (f": <code>{_e(report['tool']['command'])}</code>" if report["tool"].get("command") else "") + "<br>",
        f"<b>Result: {s['passed']} ✅ passed, {s['missed']} ❎ missed a threshold, {s['failed']} ❌ failed "
        f"(exit code {s['exit_code']})</b></div>",
        "<p class='meta'>AP values are COCO AP × 100; Δ is against the float baseline, in points.</p>",
        "<h2>Summary</h2>", html_table(*md.summary_table(report), row_classes=status_cls),
    ]
    if "recommendation" in report:  # the decision this page exists for, right under the summary
        rec = report["recommendation"]
        parts += ["<h2 id='ship'>File to ship</h2>", f"<p>{_e(headline(rec, md=False))}</p>"]
        if rec and rec["others"]:
            parts.append(html_table(["Model", "Lost because", "Detail"],
                                    [[o["name"], o["lost"], o["detail"]] for o in rec["others"]]))
    probs = md.problems(report)
    if probs:
        parts.append("<h2>Problems</h2><ul>")
        for m in report["models"]:
            if m["status"] == "fail":
                parts.append(f"<li>❌ <b>{_e(m['name'])}</b> failed to run: <code>{_e(m.get('error'))}</code></li>")
            elif m["status"] == "miss":
                parts.append(f"<li>❎ <b>{_e(m['name'])}</b>: {_e('; '.join(m['reasons']))}</li>")
        parts.append("</ul>")
    figures = {fid: (title, png) for fid, title, png in make_figures(report)}

    def fig(fid):
        if fid not in figures:
            return ""
        title, png = figures[fid]
        return (f"<h2>{_e(title)}</h2><img class='plot' id='fig-{fid}' alt='{_e(title)}' "
                f"src='data:image/png;base64,{png}'>")

    parts += ["<h2>Per-class AP (Δ vs float)</h2>", html_table(*md.per_class_table(report)),
              fig("delta_ap"), fig("pr_curves"),
              "<h2>Latency (ms)</h2><p class='meta'>init = model load and interpreter setup; the first run is "
              "excluded from the percentiles; end-to-end = pre-processing + invoke + post-processing.</p>",
              html_table(*md.latency_table(report)), fig("latency_breakdown"), fig("latency_hist"),
              "<h2>Provenance</h2>", html_table(*md.provenance_table(report))]
    tops = _bar_tops(report)
    for m in report["models"]:
        if m.get("layer_errors") and m["layer_errors"].get("rows"):
            parts.append(_layer_section(m, tops))
    parts += ["<div id='render-status' hidden data-ok='pending'></div>",
              f"<script>{_SCRIPT_TAIL}</script></body></html>"]
    return "\n".join(p for p in parts if p)
