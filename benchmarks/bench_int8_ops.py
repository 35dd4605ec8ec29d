"""Does int8 beat fp32 on this CPU at all? Single layers of Lite0@320's shapes, LiteRT + XNNPACK.

Why is int8 Lite0 no faster than fp32 on this CPU? This isolates the kernels: each case is
a one-layer model (the shapes Lite0 at 320 px and its 90-class head actually run), converted to
fp32 and to full-integer int8 (int8 I/O, so no boundary QUANTIZE), timed at ``--threads`` with
the two variants interleaved. The ratio fp32/int8 > 1 means int8 is faster.

On a CPU with AVX2 but no AVX512-VNNI/AVX-VNNI, XNNPACK's int8 GEMM widens int8 to int16 and
multiplies with VPMADDWD: about as many multiply-adds per cycle as fp32 FMA, so int8 buys
memory traffic, not arithmetic. The printed CPU flags say which case a machine is.

    python benchmarks/bench_int8_ops.py [--threads 2] [--rounds 7] [--iters 50]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# (name, input HxWxC, layer) — pointwise (GEMM), depthwise and the class-head predictor.
CASES = [
    ("pw 80x80x16->96", (80, 80, 16), ("pw", 96)),
    ("pw 40x40x144->40", (40, 40, 144), ("pw", 40)),
    ("pw 20x20x80->480", (20, 20, 80), ("pw", 480)),
    ("pw 10x10x672->192", (10, 10, 672), ("pw", 192)),
    ("dw3x3 80x80x96", (80, 80, 96), ("dw", 3)),
    ("dw5x5 20x20x480", (20, 20, 480), ("dw", 5)),
    ("head pw 40x40x64->810", (40, 40, 64), ("pw", 810)),
]


def cpu_flags() -> str:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    keep = [f for f in flags if f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp")]
    return " ".join(keep) or "none of avx2/avx512/vnni"


def build(shape, layer):
    import tf_keras as keras

    x = inp = keras.Input(shape)
    kind, arg = layer
    if kind == "pw":
        x = keras.layers.Conv2D(arg, 1, use_bias=True)(x)
    else:
        x = keras.layers.DepthwiseConv2D(arg, padding="same")(x)
    return keras.Model(inp, keras.layers.ReLU(6.0)(x))


def timer(model, shape, int8: bool, threads: int):
    """Convert with the project's one converter wrapper and return ``run(iters) -> ms per invoke``."""
    import numpy as np

    from edgedet.convert.tflite_converter import interpreter, keras_to_tflite

    rng = np.random.default_rng(0)
    rep = [rng.uniform(-1, 1, (1, *shape)).astype(np.float32) for _ in range(8)]
    blob = keras_to_tflite(model, "int8", rep, io_dtype="int8") if int8 else keras_to_tflite(model, "fp32")
    it = interpreter(blob, num_threads=threads)
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    it.invoke()

    def run(iters: int) -> float:
        t = time.perf_counter()
        for _ in range(iters):
            it.invoke()
        return (time.perf_counter() - t) / iters * 1e3

    return run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=50)
    args = ap.parse_args(argv)
    print(f"cpu flags: {cpu_flags()}; threads {args.threads}; load {os.getloadavg()[0]:.2f}")
    print(f"{'layer':26s} {'MMAC':>7s} {'fp32 ms':>8s} {'int8 ms':>8s} {'fp32/int8':>9s}")
    for name, shape, layer in CASES:
        model = build(shape, layer)
        runs = {k: timer(model, shape, k == "int8", args.threads) for k in ("fp32", "int8")}
        times = {k: [] for k in runs}
        for _ in range(args.rounds):  # interleaved
            for k, run in runs.items():
                times[k].append(run(args.iters))
        med = {k: statistics.median(v) for k, v in times.items()}
        h, w, c = shape
        macs = h * w * c * (layer[1] if layer[0] == "pw" else layer[1] ** 2) / 1e6
        print(f"{name:26s} {macs:7.1f} {med['fp32']:8.3f} {med['int8']:8.3f} {med['fp32'] / med['int8']:9.2f}")
    print(f"load after {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
