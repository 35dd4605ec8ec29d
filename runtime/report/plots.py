"""Figures for ``report.html``, drawn with matplotlib's Agg backend into base64 PNG strings.

matplotlib is imported inside :func:`make_figures` so ``edgedet.runtime`` stays light. Each
figure function takes the report dict and returns a ``Figure`` or None when there is
nothing to draw (e.g. no model ran).
"""
from __future__ import annotations

import base64
import io
import math


def _models_with(report: dict, key: str) -> list[dict]:
    return [m for m in report["models"] if m.get(key)]


def _colors(report: dict) -> dict[str, tuple]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    out, i = {}, 0
    for m in report["models"]:
        if m["role"] == "baseline":
            out[m["name"]] = (0.1, 0.1, 0.1, 1.0)
        else:
            out[m["name"]] = cmap(i % 10)
            i += 1
    return out


MAX_PR_CLASSES = 12  # beyond this the PR grid shows the classes that lost the most AP


def _worst_classes(report: dict, models: list[dict], limit: int) -> list[str]:
    """All class names, or the ``limit`` with the largest AP loss in any model (in class order)."""
    names = list(report["dataset"]["class_names"])
    if len(names) <= limit:
        return names

    def worst(n):
        ds = [(m["per_class"].get(n) or {}).get("delta_ap") for m in models]
        return min([d for d in ds if d is not None] or [0.0])

    keep = set(sorted(names, key=worst)[:limit])
    return [n for n in names if n in keep]


def pr_curves(report: dict, plt, colors):
    """Per-class precision-recall at IoU 0.5: the float baseline against every model."""
    models = _models_with(report, "per_class")
    names = _worst_classes(report, models, MAX_PR_CLASSES)
    if not models or not names:
        return None
    recall = report["recall_thresholds"]
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for m in models:
            pc = m["per_class"].get(name) or {}
            curve = pc.get("pr_iou50")
            if not curve:
                continue
            base = m["role"] == "baseline"
            ap50 = pc.get("ap50")
            label = f"{m['name']} ({ap50 * 100:.1f})" if ap50 is not None and ap50 >= 0 else m["name"]
            ax.plot(recall, curve, color=colors[m["name"]], lw=2.4 if base else 1.3,
                    ls="-" if base else "--", label=label)
        ax.set_title(f"{name}  (AP50 in legend)", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall", fontsize=8)
        ax.set_ylabel("precision", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, loc="lower left")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def delta_ap_bars(report: dict, plt, colors):
    """Per-class ΔAP (points) of every candidate against float, grouped by class."""
    models = [m for m in _models_with(report, "per_class") if m["role"] != "baseline"]
    names = report["dataset"]["class_names"]
    if not models or not names:
        return None
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(min(16.0, max(6.0, 1.1 * len(names) * max(1, len(models)) ** 0.5 + 2)), 3.6))
    for i, m in enumerate(models):
        xs, ys = [], []
        for j, name in enumerate(names):
            d = (m["per_class"].get(name) or {}).get("delta_ap")
            if d is not None:
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(d * 100)
        ax.bar(xs, ys, width=width * 0.95, color=colors[m["name"]], label=m["name"])
    drop = report["thresholds"].get("max_ap_drop")
    if drop is not None:
        # the budget applies to overall AP: a class past this line does not fail the model
        ax.axhline(-drop * 100, color="crimson", ls=":", lw=1.2,
                   label=f"overall AP budget −{drop * 100:.2f} (not checked per class)")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center")
    ax.set_ylabel("ΔAP vs float (points)")
    ax.grid(axis="y", alpha=0.3)
    # Legend under the axes: over them it would hide the bars it explains.
    ncol = min(4, len(models) + 1)
    rows = -(-(len(models) + 1) // ncol)
    fig.set_size_inches(fig.get_size_inches()[0], 3.6 + 0.22 * rows)
    ax.legend(fontsize=7, ncol=ncol, loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    fig.tight_layout()
    return fig


def latency_histograms(report: dict, plt, colors):
    """Histogram of invoke and end-to-end times, one row per model that ran."""
    models = [m for m in _models_with(report, "latency") if (m["latency"].get("samples_ms") or {}).get("end_to_end")]
    if not models:
        return None
    fig, axes = plt.subplots(len(models), 1, figsize=(7.5, 1.7 * len(models) + 0.6), squeeze=False)
    budget = report["thresholds"].get("latency_budget_ms")
    for ax, m in zip(axes[:, 0], models):
        s = m["latency"]["samples_ms"]
        both = list(s.get("end_to_end") or []) + list(s.get("invoke") or [])
        lo, hi = min(both), max(both)
        bins = 40 if hi > lo else 1
        ax.hist(s.get("invoke") or [], bins=bins, range=(lo, hi if hi > lo else lo + 1), alpha=0.55,
                color=colors[m["name"]], label="invoke")
        ax.hist(s["end_to_end"], bins=bins, range=(lo, hi if hi > lo else lo + 1), histtype="step", lw=1.6,
                color="black", label="end-to-end")
        p50 = (m["latency"].get("end_to_end") or {}).get("p50")
        if p50 is not None:
            ax.axvline(p50, color="black", ls="--", lw=0.9)
        if budget is not None and budget <= hi * 1.5:
            ax.axvline(budget, color="crimson", ls=":", lw=1.2, label="budget")
        ax.set_ylabel(m["name"], fontsize=7, rotation=0, ha="right", va="center")
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6.5, loc="upper right")
    axes[-1, 0].set_xlabel("ms")
    fig.tight_layout()
    return fig


def latency_breakdown(report: dict, plt, colors):
    """Median pre-processing / invoke / post-processing per model as stacked bars."""
    models = [m for m in _models_with(report, "latency") if (m["latency"].get("invoke") or {}).get("p50") is not None]
    if not models:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(models) + 1.2))
    y = list(range(len(models)))[::-1]
    left = [0.0] * len(models)
    for part, color in (("pre", "#8da0cb"), ("invoke", "#fc8d62"), ("post", "#66c2a5")):
        vals = [(m["latency"].get(part) or {}).get("p50") or 0.0 for m in models]
        ax.barh(y, vals, left=left, color=color, label=f"{part} p50")
        left = [a + b for a, b in zip(left, vals)]
    budget = report["thresholds"].get("latency_budget_ms")
    if budget is not None:
        ax.axvline(budget, color="crimson", ls=":", lw=1.2, label="budget")
    ax.set_yticks(y)
    ax.set_yticklabels([m["name"] for m in models], fontsize=7)
    ax.set_xlabel("ms")
    ax.legend(fontsize=7, ncol=4, loc="lower right")
    fig.tight_layout()
    return fig


FIGURES = (
    ("pr_curves", "Per-class precision-recall (IoU 0.5): float vs each model (the 12 worst classes when there are more)",
     pr_curves),
    ("delta_ap", "Per-class ΔAP against float", delta_ap_bars),
    ("latency_breakdown", "Latency breakdown (median)", latency_breakdown),
    ("latency_hist", "Latency histograms", latency_histograms),
)


def make_figures(report: dict, dpi: int = 90) -> list[tuple[str, str, str]]:
    """Render every figure that has data.

    Returns:
        ``[(id, title, base64_png)]`` in page order.
    """
    # Figure without pyplot: savefig renders through Agg, no GUI backend or global state.
    from matplotlib.figure import Figure

    class _Plt:  # the one pyplot call the figure functions need
        @staticmethod
        def subplots(*args, **kwargs):
            squeeze = kwargs.pop("squeeze", True)
            fig = Figure(figsize=kwargs.pop("figsize", None))
            axes = fig.subplots(*args, squeeze=squeeze, **kwargs)
            return fig, axes

    colors = _colors(report)
    out = []
    for fid, title, fn in FIGURES:
        fig = fn(report, _Plt, colors)
        if fig is None:
            continue
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        out.append((fid, title, base64.b64encode(buf.getvalue()).decode("ascii")))
    return out
