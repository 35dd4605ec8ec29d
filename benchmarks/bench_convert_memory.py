"""Peak memory (RSS) of converting Lite0 to every target in one `edgedet convert` process.

Runs ``edgedet convert --weights RUN --target <all 10 targets> --calib-data ...`` in a child
process and reports its peak resident set size (``ru_maxrss`` of the waited-for child, which
includes any processes it spawned and waited for). Budget: < 4 GB.

The run is the same Lite0 @ 320 px, 90-class run the latency benchmark builds
(benchmarks/bench_latency_lite0.py), cached in ``--work``.

    python benchmarks/bench_convert_memory.py [--work DIR] [--calib-count 100] [--targets ...]
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_latency_lite0 import calibration_images, make_lite0_run  # noqa: E402

ALL = ["tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8", "edgetpu",
       "onnx", "onnx-int8", "openvino-fp32", "openvino-fp16", "openvino-int8"]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=os.environ.get("EDGEDET_BENCH_WORK", "/tmp/edgedet-bench-lite0"))
    ap.add_argument("--calib-count", type=int, default=300)
    ap.add_argument("--targets", nargs="+", default=ALL)
    args = ap.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    run = make_lite0_run(work / "run")
    calib = work / "calib.txt"
    calib.write_text("\n".join(calibration_images()) + "\n")
    out = work / "memory_export"
    cmd = [sys.executable, "-m", "edgedet", "convert", "--weights", str(run), "--calib-data", str(calib),
           "--calib-count", str(args.calib_count), "--out", str(out)]
    for t in args.targets:
        cmd += ["--target", t]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    for line in proc.stderr.splitlines():
        if line.startswith("[convert]"):
            print(line)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        sys.exit(f"convert failed with exit code {proc.returncode}")
    peak_gb = peak_kb * 1024 / 1e9
    print(f"peak RSS of `edgedet convert` (Lite0 320 px, 90 classes, {len(args.targets)} targets, "
          f"{args.calib_count} calibration images): {peak_gb:.2f} GB ({wall:.0f} s wall); "
          f"budget < 4 GB: {'PASS' if peak_gb < 4 else 'MISS'}")
    return {"peak_rss_gb": peak_gb, "wall_s": wall, "targets": args.targets}


if __name__ == "__main__":
    main()
