"""Statistics on known inputs: exact values, not just 'looks plausible'."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest

from edgedet.runtime.report import stats


def test_percentile_known_values():
    v = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    # rank = q/100 * (n-1): p50 -> 4.5 -> 5.5; p90 -> 8.1 -> 9.1; p99 -> 8.91 -> 9.91
    assert stats.percentile(v, 50) == pytest.approx(5.5)
    assert stats.percentile(v, 90) == pytest.approx(9.1)
    assert stats.percentile(v, 99) == pytest.approx(9.91)
    assert stats.percentile(v, 0) == 1 and stats.percentile(v, 100) == 10
    assert stats.percentile(list(reversed(v)), 50) == pytest.approx(5.5)  # order-free


def test_percentile_matches_numpy_default():
    rng = np.random.default_rng(0)
    v = rng.exponential(3.0, 257).tolist()
    for q in (1, 25, 50, 90, 99, 99.9):
        assert stats.percentile(v, q) == pytest.approx(float(np.percentile(v, q)), rel=1e-12)


def test_percentile_edge_cases():
    assert stats.percentile([], 50) is None
    assert stats.percentile([7.0], 99) == 7.0
    assert stats.percentile([1.0, float("nan"), 3.0, None], 50) == 2.0
    with pytest.raises(ValueError):
        stats.percentile([1.0], 101)


def test_summarize():
    s = stats.summarize([4.0, 1.0, 3.0, 2.0])
    assert s["n"] == 4 and s["min"] == 1.0 and s["max"] == 4.0
    assert s["mean"] == 2.5 and s["p50"] == 2.5
    assert s["p90"] == pytest.approx(3.7) and s["p99"] == pytest.approx(3.97)
    assert s["std"] == pytest.approx(math.sqrt(1.25))
    empty = stats.summarize([])
    assert empty["n"] == 0 and empty["p50"] is None and empty["mean"] is None


def test_ratio_delta_gmacs():
    assert stats.ratio(3.0, 2.0) == 1.5
    assert stats.ratio(1.0, 0.0) is None and stats.ratio(None, 2.0) is None
    assert stats.delta(0.40, 0.45) == pytest.approx(-0.05)
    assert stats.delta(0.4, -1.0) is None and stats.delta(None, 0.3) is None
    assert stats.gmacs_per_second(2_000_000_000, 0.5) == 4.0
    assert stats.gmacs_per_second(None, 0.5) is None and stats.gmacs_per_second(10, 0) is None


def test_histogram_counts_sum():
    h = stats.histogram([1, 1, 2, 3, 10], bins=3)
    assert sum(h["counts"]) == 5 and len(h["edges"]) == 4
    assert h["edges"][0] == 1.0 and h["edges"][-1] == 10.0
    assert h["counts"] == [4, 0, 1]


def test_timer_and_format():
    with stats.Timer() as t:
        time.sleep(0.01)
    assert 8 <= t.ms < 1000
    assert stats.fmt_ms(None) == "-" and stats.fmt_ms(1.234) == "1.23"
    assert stats.fmt_pct(0.4123) == "41.2" and stats.fmt_pct(-1.0) == "-"
    assert stats.fmt_pct(-0.012, signed=True) == "-1.2"
