"""Latency statistics for reports and benchmarks: percentiles, summaries, ratios, timers.

Pure Python + numpy. All times are kept in milliseconds once they leave a timer.
"""
from __future__ import annotations

import math
import time
from typing import Iterable, Sequence

import numpy as np

PERCENTILES = (50, 90, 99)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile with linear interpolation between closest ranks.

    Same definition as ``numpy.percentile(..., method="linear")`` (NumPy's default and
    Excel's PERCENTILE.INC): rank ``r = q/100 * (n - 1)`` into the sorted values, interpolated.

    Args:
        values: samples (any order); NaN and None are ignored.
        q: percentile in [0, 100].

    Returns:
        The percentile, or None for no samples.

    Raises:
        ValueError: ``q`` outside [0, 100].
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q={q} is outside [0, 100]")
    v = sorted(float(x) for x in values if x is not None and not math.isnan(float(x)))
    if not v:
        return None
    rank = q / 100.0 * (len(v) - 1)
    lo = int(math.floor(rank))
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (rank - lo)


def summarize(values_ms: Iterable[float], percentiles: Sequence[int] = PERCENTILES) -> dict:
    """Summary of latency samples in milliseconds.

    Returns:
        ``{"n", "mean", "std", "min", "max", "p50", "p90", "p99"}`` (percentile keys follow
        ``percentiles``); every value None when there are no samples.
    """
    v = [float(x) for x in values_ms if x is not None and not math.isnan(float(x))]
    out: dict = {"n": len(v)}
    if not v:
        out.update({k: None for k in ("mean", "std", "min", "max")})
        out.update({f"p{p}": None for p in percentiles})
        return out
    a = np.asarray(v, np.float64)
    out.update({"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()), "max": float(a.max())})
    out.update({f"p{p}": percentile(v, p) for p in percentiles})
    return out


def median(values: Sequence[float]) -> float | None:
    return percentile(values, 50)


def ratio(num: float | None, den: float | None) -> float | None:
    """``num / den``, or None when either is missing or ``den`` is zero."""
    if num is None or den is None or den == 0 or math.isnan(num) or math.isnan(den):
        return None
    return float(num) / float(den)


def delta(value: float | None, base: float | None) -> float | None:
    """``value - base``, or None when either is undefined (None, NaN, or COCO's -1)."""
    if value is None or base is None:
        return None
    if math.isnan(value) or math.isnan(base) or value < 0 or base < 0:
        return None
    return float(value) - float(base)


def gmacs_per_second(macs: int | float | None, seconds: float | None) -> float | None:
    """Achieved throughput in GMAC/s for one inference of ``macs`` taking ``seconds``."""
    if not macs or not seconds or seconds <= 0:
        return None
    return float(macs) / float(seconds) / 1e9


def histogram(values_ms: Sequence[float], bins: int = 30) -> dict:
    """Histogram of samples for the report: ``{"edges": [bins+1], "counts": [bins]}``."""
    v = np.asarray([x for x in values_ms if x is not None], np.float64)
    if v.size == 0:
        return {"edges": [], "counts": []}
    counts, edges = np.histogram(v, bins=bins)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


class Timer:
    """Context manager measuring wall time with ``time.perf_counter``.

    Example:
        >>> with Timer() as t:
        ...     pass
        >>> t.ms >= 0
        True
    """

    def __init__(self) -> None:
        self.start = 0.0
        self.seconds = 0.0

    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start

    @property
    def ms(self) -> float:
        return self.seconds * 1e3


def fmt_ms(v: float | None, digits: int = 2) -> str:
    """``12.35`` style text for a millisecond value, ``-`` when missing."""
    return "-" if v is None else f"{v:.{digits}f}"


def fmt_pct(v: float | None, digits: int = 1, signed: bool = False) -> str:
    """An AP-like fraction as percentage points (``0.4123 -> 41.2``), ``-`` when undefined."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or (not signed and v < 0):
        return "-"
    return f"{v * 100:+.{digits}f}" if signed else f"{v * 100:.{digits}f}"
