"""The file to ship: the fastest model within the device profile's accuracy budget.

Rule, applied to the candidate files of one report (the float baseline is a reference, not a
file to ship):

1. a model that failed to run, or whose speed was not measured, is out; so is every model when
   the float baseline was given but failed (its AP could not be checked), and, for an
   accelerator profile (Coral, NNAPI, an Intel GPU/NPU), a file its backend does not run;
2. a model whose AP dropped more than the profile's ``max_ap_drop`` is out ("over budget");
3. of the rest, the fastest by the report's latency metric (``end_to_end.p50`` by default:
   pre-processing + invoke + decode/NMS, what a user waits for) wins;
4. models within ``TIE_FRACTION`` of the fastest count as equally fast (medians of a few hundred
   runs move by a few percent between runs), and the smallest file among them wins; equal
   sizes fall back to the faster one.

Every other candidate gets a one-line reason: failed, not measured, not for this device, over
budget, slower, or as fast but larger.
"""
from __future__ import annotations

from edgedet.errors import ConfigError
from edgedet.files import fmt_size

TIE_FRACTION = 0.05  # latencies within 5 % of the fastest are a tie
NO_FILE = "no candidate ran within the accuracy budget, with its AP checked and its latency measured"

RECOMMENDATION_SCHEMA: dict = {
    "type": ["object", "null"],
    "required": ["name", "path", "metric", "latency_ms", "file_size_bytes", "reason", "others"],
    "properties": {
        "name": {"type": "string"}, "path": {"type": "string"}, "metric": {"type": "string"},
        "latency_ms": {"type": "number"}, "file_size_bytes": {"type": ["integer", "null"]},
        "reason": {"type": "string"}, "meets_latency_budget": {"type": ["boolean", "null"]},
        "others": {"type": "array", "items": {
            "type": "object", "required": ["name", "path", "lost", "detail"],
            "properties": {"name": {"type": "string"}, "path": {"type": "string"},
                           "lost": {"type": "string", "enum": ["failed", "not measured", "not for this device", "over budget", "slower", "larger"]},
                           "detail": {"type": "string"}}}},
    },
}


def _over_budget(entry: dict, max_drop) -> str | None:
    """Why the model is over the accuracy budget, or None."""
    d = (entry.get("delta") or {}).get("AP")
    if max_drop is None or d is None or -d <= max_drop + 1e-12:
        return None
    return f"AP dropped {-d * 100:.2f} points (allowed {max_drop * 100:.2f})"


def _other_backend(device: str | None):
    """``entry -> reason or None``: why the profile's device cannot run the entry's file: an
    accelerator profile and another backend's format (an OpenVINO folder under ``coral-usb``),
    or a runtime none of the profile's targets uses (an OpenVINO folder on ``raspberry-pi-4``,
    measured on this host's CPU but not what the board runs)."""
    if not device:
        return lambda m: None
    try:
        from edgedet.devices import TARGET_BACKEND, load_profile  # noqa: PLC0415
        from edgedet.runtime.detector import backend_for  # noqa: PLC0415

        prof = load_profile(device)  # the profile's file where the report names it: user profiles too
    except Exception:  # noqa: BLE001 - a report read back without the profile: no such rule
        return lambda m: None

    def reason(m: dict) -> str | None:
        try:
            backend = backend_for(m["path"])
        except Exception:  # noqa: BLE001 - a bad suffix is the model's own failure, reported elsewhere
            return None
        try:
            prof.device_for(backend)  # a CPU profile runs every backend's files
        except ConfigError as exc:
            return f"a {backend} file: {exc}"
        runtimes = {TARGET_BACKEND[t] for t in prof.targets}
        if backend not in runtimes:
            return f"a {backend} file; {prof.name}'s targets ({', '.join(prof.targets)}) run on {', '.join(sorted(runtimes))}"
        if prof.device.lower() != "cpu":  # an accelerator runs only the files made for it
            target = m.get("target")
            if target and target not in prof.targets:
                return f"a {target} file; {prof.name} runs {', '.join(prof.targets)} files"
            ran = str(((m.get("provenance") or {}).get("device")) or "")
            if ran.lower() == "cpu":
                return f"ran on the CPU fallback, not on {prof.name}'s {prof.device}: its latency is not the device's"
        return None

    return reason


def recommend(models: list[dict], thresholds: dict, tie: float = TIE_FRACTION) -> dict | None:
    """Choose the file to ship among a report's entries.

    Args:
        models: report entries (``build.model_entry`` / ``failed_entry``) with deltas filled in.
        thresholds: the report's thresholds (``max_ap_drop``, ``latency_metric``).
        tie: latencies within this fraction of the fastest count as equal.

    Returns:
        ``{"name", "path", "metric", "latency_ms", "file_size_bytes", "reason", "others": [{"name",
        "path", "lost", "detail"}]}``, or None when no candidate is within the budget with a measured latency.
    """
    from edgedet.runtime.report.build import latency_value  # noqa: PLC0415  (build imports this module)

    metric = thresholds.get("latency_metric") or "end_to_end.p50"
    max_drop = thresholds.get("max_ap_drop")
    base_failed = any(m.get("role") == "baseline" and m.get("status") == "fail" for m in models)
    elsewhere = _other_backend(thresholds.get("device_file") or thresholds.get("device"))
    others, fit = [], []
    for m in models:
        if m.get("role") != "candidate":
            continue
        lat = m.get("rank_ms", latency_value(m, metric))  # the interleaved re-run where there is one
        over = _over_budget(m, max_drop)
        if m.get("status") == "fail":
            others.append((m, "failed", m.get("error") or "did not run"))
        elif elsewhere(m):
            others.append((m, "not for this device", elsewhere(m)))
        elif base_failed:
            others.append((m, "not measured", "AP not checked: the float baseline failed"))
        elif lat is None:
            others.append((m, "not measured", f"no {metric} latency"))
        elif over:
            others.append((m, "over budget", f"{over}; {metric} {latency_value(m, metric) or lat:.2f} ms"))
        else:
            fit.append((lat, m))
    if not fit:
        return None
    # "interleaved": every file re-run round by round (rank_ms), so load hit them alike
    label = metric + (" interleaved" if all("rank_ms" in m for _, m in fit) and len(fit) > 1 else "")
    fastest = min(lat for lat, _ in fit)
    tied = [(m.get("file_size_bytes") if m.get("file_size_bytes") is not None else float("inf"), lat, m)
            for lat, m in fit if lat <= fastest * (1.0 + tie)]
    size, lat, best = min(tied, key=lambda t: (t[0], t[1]))
    for lat_m, m in fit:
        if m is best:
            continue
        if lat_m <= fastest * (1.0 + tie):
            others.append((m, "larger", f"as fast ({label} {lat_m:.2f} ms, within {tie * 100:.0f} %) but "
                                        f"{fmt_size(m.get('file_size_bytes'))} vs {fmt_size(best.get('file_size_bytes'))}"))
        else:
            others.append((m, "slower", f"{label} {lat_m:.2f} ms vs {lat:.2f} ms ({(lat_m / lat - 1) * 100:+.0f} %)"))
    delta = (best.get("delta") or {}).get("AP")
    if delta is None:
        accuracy = "AP not checked against a float baseline"
    elif max_drop is None:  # a baseline but no budget (no --device, no --max-ap-drop)
        accuracy = f"ΔAP {delta * 100:+.2f} points, no AP budget set (--device or --max-ap-drop)"
    else:
        accuracy = f"ΔAP {delta * 100:+.2f} points within the {max_drop * 100:.2f}-point budget"
    reason = f"fastest within the accuracy budget: {label} {lat:.2f} ms, {fmt_size(best.get('file_size_bytes'))}, {accuracy}"
    if len(tied) > 1:
        reason += f"; smallest of {len(tied)} files within {tie * 100:.0f} % of the fastest"
    budget = thresholds.get("latency_budget_ms")
    own = latency_value(best, metric)  # the budget is judged on the report's own figure, as the ✅/❎ are
    meets = None if budget is None or own is None else bool(own <= budget)
    if meets is False:
        reason += f"; over the {budget:g} ms latency budget, as every candidate within the accuracy budget is"
    order = {"slower": 0, "larger": 1, "over budget": 2, "not measured": 3, "not for this device": 4, "failed": 5}
    others.sort(key=lambda o: order[o[1]])
    return {"name": best["name"], "path": best["path"], "metric": metric, "latency_ms": float(lat),
            "file_size_bytes": best.get("file_size_bytes"), "reason": reason, "meets_latency_budget": meets,
            "others": [{"name": m["name"], "path": m["path"], "lost": lost, "detail": detail} for m, lost, detail in others]}


def headline(rec: dict | None, md: bool = True) -> str:
    """The file-to-ship sentence: the file, or why there is none (one source for md, html, terminal)."""
    if rec is None:
        return f"None: {NO_FILE}."
    path = f"**`{rec['path']}`**" if md else rec["path"]
    if rec.get("meets_latency_budget") is False:
        return f"None meets the latency budget; the nearest is {path} ({rec['name']}): {rec['reason']}."
    return f"{path} ({rec['name']}): {rec['reason']}."


def markdown(rec: dict | None) -> list[str]:
    """The report's "File to ship" section."""
    lines = ["## File to ship", "", headline(rec), ""]
    if rec is None:
        return lines
    if rec["others"]:
        lines += ["| Model | Lost because | Detail |", "|---|---|---|"]
        lines += [f"| {o['name']} | {o['lost']} | {o['detail'].replace('|', '/')} |" for o in rec["others"]]
        lines.append("")
    return lines
