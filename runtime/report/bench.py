"""``edgedet bench``: latency only, several models side by side.

Every (model, threads) configuration is loaded first; then the runs are interleaved, round by
round, with the order rotated each round, so slow drifts of the machine (thermal throttling,
a neighbour process, frequency scaling) hit every configuration alike instead of whichever
happened to run last. Reports medians and ratios against the first configuration.
"""
from __future__ import annotations

import os
import time

import numpy as np

from edgedet.runtime.report.stats import median, percentile, ratio


def _test_image(path: str | None) -> np.ndarray:
    if path:
        from edgedet.runtime.preprocess import load_image

        return load_image(path)
    # A 640x480 frame with structure (gradients + blobs): realistic NMS load, no file needed.
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:480, 0:640].astype(np.float32)
    img = np.stack([xx / 640 * 220, yy / 480 * 220, (xx + yy) / 1120 * 255], -1)
    for _ in range(12):
        cy, cx, r = rng.integers(0, 480), rng.integers(0, 640), rng.integers(10, 60)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 255, 3)
    return img.astype(np.uint8)


def schedule(n_configs: int, rounds: int) -> list[int]:
    """Interleaved call order: round r runs every configuration once, starting at ``r mod n``.

    >>> schedule(3, 2)
    [0, 1, 2, 1, 2, 0]
    """
    return [(r + k) % n_configs for r in range(rounds) for k in range(n_configs)]


def bench(models: list[str], threads: list[int | None] | None = None, device: str | None = None, runs: int = 50,
          warmup: int = 3, image: str | None = None, progress: bool = True, fallback: str | None = None) -> list[dict]:
    """Benchmark models; returns one row per (model, threads), the first being the reference.

    Row keys: ``model``, ``name``, ``threads``, ``backend``, ``device``, ``init_ms``, ``runs``,
    ``invoke_p50``, ``invoke_p90``, ``e2e_p50``, ``e2e_p90``, ``pre_p50``, ``post_p50`` (ms),
    ``ratio_e2e`` and ``ratio_invoke`` (median / the first row's median), ``error`` (or None).
    """
    from edgedet.runtime.detector import Detector, backend_for
    from edgedet.runtime.report.validate import _device_for, resolve_thresholds, row_names

    prof, _ = resolve_thresholds(device)
    img = _test_image(image)
    configs = []
    for path, name in zip(models, row_names(models)):  # parent/file where exports share a file name
        for t in threads or [None]:
            dev, thr = _device_for(path, prof, t)
            row = {"model": str(path), "name": name, "threads": thr,
                   "backend": None, "device": None, "init_ms": None, "runs": 0, "error": None}
            try:
                if prof is not None:
                    prof.device_for(backend_for(path))  # an accelerator profile runs its own backend's files only
                t0 = time.perf_counter()
                det = Detector.from_file(path, device=dev, threads=thr, fallback=fallback)
                row["init_ms"] = (time.perf_counter() - t0) * 1e3
                d = det.describe()
                row.update(backend=d.get("backend"), device=d.get("device"), threads=d.get("threads", thr))
                for _ in range(max(1, warmup)):
                    det.detect(img)
            except Exception as exc:  # noqa: BLE001 - a model that cannot run is a row with its error
                det = None
                row["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            configs.append((row, det, {"pre": [], "invoke": [], "post": [], "e2e": []}))
    live = [i for i, (_, det, _) in enumerate(configs) if det is not None]
    order = [live[i] for i in schedule(len(live), runs)] if live else []
    bar = None
    if progress and order:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(order), desc="bench", unit="run", leave=False)
        except ImportError:
            bar = None
    for i in order:
        row, det, samples = configs[i]
        t0 = time.perf_counter()
        det.detect(img)
        e2e = (time.perf_counter() - t0) * 1e3
        samples["e2e"].append(e2e)
        for k in ("pre", "invoke", "post"):
            samples[k].append(det.last_timing[k] * 1e3)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    rows = []
    for row, _, s in configs:
        row.update(runs=len(s["e2e"]), invoke_p50=median(s["invoke"]), invoke_p90=percentile(s["invoke"], 90),
                   e2e_p50=median(s["e2e"]), e2e_p90=percentile(s["e2e"], 90), pre_p50=median(s["pre"]),
                   post_p50=median(s["post"]))
        rows.append(row)
    ref = next((r for r in rows if r["error"] is None), None)
    for r in rows:
        r["ratio_e2e"] = ratio(r["e2e_p50"], ref["e2e_p50"]) if ref else None
        r["ratio_invoke"] = ratio(r["invoke_p50"], ref["invoke_p50"]) if ref else None
    return rows


def bench_table(rows: list[dict]) -> str:
    """Markdown table of :func:`bench` rows."""
    from edgedet.runtime.report.md import md_table
    from edgedet.runtime.report.stats import fmt_ms

    def rat(v):
        return "-" if v is None else f"{v:.2f}x"

    header = ["Model", "Threads", "Backend", "Device", "init ms", "invoke p50 ms", "invoke p90 ms", "e2e p50 ms",
              "e2e p90 ms", "pre p50 ms", "post p50 ms", "e2e time vs row 1", "invoke time vs row 1", "runs"]
    body = []
    for r in rows:
        if r["error"]:
            body.append([r["name"], str(r["threads"] or "-"), r["backend"] or "-", "-", "-", "-", "-", "-", "-", "-",
                         "-", "-", "-", f"❌ {r['error']}"])
            continue
        body.append([r["name"], str(r["threads"] or "default"), r["backend"] or "-", r["device"] or "-",
                     fmt_ms(r["init_ms"], 1), fmt_ms(r["invoke_p50"]), fmt_ms(r["invoke_p90"]), fmt_ms(r["e2e_p50"]),
                     fmt_ms(r["e2e_p90"]), fmt_ms(r["pre_p50"]), fmt_ms(r["post_p50"]), rat(r["ratio_e2e"]),
                     rat(r["ratio_invoke"]), str(r["runs"])])
    return md_table(header, body)


def bench_footer(runs: int, warmup: int, image: str | None) -> str:
    """What the table's figures are: the runs, the input and how busy the machine was."""
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    line = (f"{runs} timed runs per row after {warmup} warm-up runs, interleaved round by round; input: "
            f"{image or 'a synthetic 640x480 frame'}; 'time vs row 1' below 1.00x is faster than row 1")
    if load is not None:
        line += f"; load average {load:.1f} on {cores} cores"
        if load >= cores:
            line += " (busy: medians move between runs; compare rows of one run only)"
    return line


RANK_RUNS = 30  # interleaved timed calls per candidate for the file-to-ship ranking
_BENCH_KEY = {"end_to_end.p50": "e2e_p50", "end_to_end.p90": "e2e_p90", "invoke.p50": "invoke_p50",
              "invoke.p90": "invoke_p90"}


def rank_candidates(entries: list[dict], metric: str, device=None, threads=None, fallback=None, image=None) -> None:
    """Give each candidate that ran ``rank_ms``: ``metric`` over interleaved runs of them all.

    ``validate`` runs one model after another, each over the whole split, so on a busy machine
    whatever else ran at the time decides which file looks faster (the named file changed between
    identical runs). Interleaved, round by round, load hits every file alike, as in ``edgedet bench``.
    The report's latency columns stay the per-image figures; only the ranking uses these.
    """
    key = _BENCH_KEY.get(metric)
    ran = [e for e in entries if e["role"] == "candidate" and e["status"] != "fail" and e["format"] != "keras"]
    if key is None or len(ran) < 2:
        return
    rows = bench([e["path"] for e in ran], threads=[threads] if threads else None, device=device, runs=RANK_RUNS,
                 warmup=2, image=image, progress=False, fallback=fallback)
    for e, row in zip(ran, rows):
        if row["error"] is None and row.get(key) is not None:
            e["rank_ms"] = float(row[key])
