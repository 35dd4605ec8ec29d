"""`edgedet bench`: interleaved schedule, medians and ratios on a tiny real LiteRT model."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from edgedet.runtime.report.bench import bench, bench_table, schedule


def test_schedule_interleaves_and_rotates():
    order = schedule(3, 4)
    assert order[:6] == [0, 1, 2, 1, 2, 0]
    assert Counter(order) == {0: 4, 1: 4, 2: 4}  # every configuration runs once per round
    # each configuration leads a round as often as the others (no one always runs first/last)
    assert Counter(order[r * 3] for r in range(3)) == {0: 1, 1: 1, 2: 1}
    assert schedule(1, 3) == [0, 0, 0]


@pytest.mark.slow  # converts the tiny model to TFLite on first use (shared with the runtime tests)
def test_bench_rows_ratios_and_table(rt_models, tmp_path):
    path = rt_models.tflite("fp32")
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a model")
    rows = bench([path, str(broken)], threads=[1, 2], runs=6, warmup=1, progress=False)
    assert [r["threads"] for r in rows[:2]] == [1, 2]
    ok = [r for r in rows if r["error"] is None]
    assert len(ok) == 2 and all(r["runs"] == 6 for r in ok)
    assert rows[0]["ratio_e2e"] == 1.0 and rows[0]["ratio_invoke"] == 1.0
    assert rows[1]["ratio_e2e"] == pytest.approx(rows[1]["e2e_p50"] / rows[0]["e2e_p50"])
    for r in ok:
        assert r["backend"] == "litert" and 0 < r["invoke_p50"] <= r["e2e_p50"] * 1.5
        assert r["invoke_p90"] >= r["invoke_p50"] and r["init_ms"] > 0
    bad = [r for r in rows if r["error"]]
    assert len(bad) == 2 and all(r["runs"] == 0 and r["ratio_e2e"] is None for r in bad)
    table = bench_table(rows)
    assert table.count("\n") == len(rows) + 1 and "1.00x" in table and "❌" in table


def test_bench_cli_json(rt_models, tmp_path, capsys):
    from edgedet.cli import main

    out = tmp_path / "bench.json"
    rc = main(["bench", "--models", rt_models.tflite("fp32"), "--runs", "3", "--warmup", "1", "--json", str(out)])
    assert rc == 0
    rows = json.loads(out.read_text())
    assert len(rows) == 1 and rows[0]["runs"] == 3
    printed = capsys.readouterr().out
    assert "e2e time vs row 1" in printed and "e2e p50 ms" in printed
    assert "3 timed runs per row after 1 warm-up runs, interleaved round by round; input: a synthetic" in printed
    assert "load average" in printed


def test_an_accelerator_profile_runs_only_its_own_backends_files(tmp_path):
    from edgedet.runtime.report.bench import bench

    (tmp_path / "m.onnx").write_bytes(b"not read: refused before loading")
    rows = bench([str(tmp_path / "m.onnx")], device="coral-usb", runs=1, warmup=0, progress=False)
    assert "device profile 'coral-usb' runs litert models on usb:0; this file needs onnxruntime" in rows[0]["error"]


def test_exports_that_share_a_file_name_get_their_folder_in_the_row_name(rt_models, tmp_path):
    import shutil

    for sub in ("float", "qat"):
        (tmp_path / sub).mkdir()
        shutil.copyfile(rt_models.tflite("fp32"), tmp_path / sub / "m_tflite-int8.tflite")
    rows = bench([str(tmp_path / "float" / "m_tflite-int8.tflite"), str(tmp_path / "qat" / "m_tflite-int8.tflite")],
                 runs=2, warmup=1, progress=False)
    assert [r["name"] for r in rows] == ["float/m_tflite-int8.tflite", "qat/m_tflite-int8.tflite"]


def test_fallback_runs_an_accelerator_profile_on_the_cpu_and_says_so(rt_models):
    """No Edge TPU here: without --fallback the row fails, with it the file runs on the CPU."""
    path = rt_models.tflite("fp32")
    bare = bench([path], device="coral-usb", runs=2, warmup=1, progress=False)
    assert bare[0]["error"]
    rows = bench([path], device="coral-usb", runs=2, warmup=1, progress=False, fallback="cpu")
    assert rows[0]["error"] is None and rows[0]["runs"] == 2 and "cpu" in str(rows[0]["device"]).lower()
