"""Where does a TFLite model's time go? Every op timed on its own, and int8 against fp32 op by op.

LiteRT's Python API has no per-op profiler, and with XNNPACK the whole graph is one delegate
node, so ``benchmark_model``-style profiles show a single line. This cuts the model instead:
each operator becomes a one-op model (its own weights, quantisation and shapes, inputs fed
with random values) that is timed alone under XNNPACK at ``--threads``. The sum is a little
above the whole-graph invoke (each one-op model pays its own dispatch and starts cold), but the
ranking is what matters. Ops whose cost depends on the values (the ``--nms`` models'
TFLite_Detection_PostProcess) are timed on random inputs here, so read their rows as a ceiling.

With ``--fp32 FILE`` too, the convolutions of the two files (same Keras model, same op order)
are paired and the int8/fp32 ratio is shown per op and per feature-map resolution: on an AVX2
CPU without VNNI the int8 kernels lose where channels are few and maps are large (the stem and
the first stages) and win slightly on the deep 1x1 convolutions.

    python benchmarks/bench_op_profile.py MODEL.tflite [--fp32 FP32.tflite] [--threads 2] [--top 15]

For the Lite0@320 files of ``bench_latency_lite0.py`` (``--work`` folder)::

    python benchmarks/bench_op_profile.py /tmp/edgedet-bench-lite0/tflite-int8/lite0_tflite-int8.tflite \\
        --fp32 /tmp/edgedet-bench-lite0/tflite-fp32/lite0_tflite-fp32.tflite
"""
from __future__ import annotations

import argparse
import collections
import copy
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

COMPUTE = ("CONV_2D", "DEPTHWISE_CONV_2D")


def _load(path: str):
    """The file's flatbuffer object, as the runtime runs it (int8 -> uint8 output flips removed)."""
    from ai_edge_litert.tools import flatbuffer_utils as fu

    from edgedet.runtime.backends.tflite_io import strip_type_flips

    data = Path(path).read_bytes()
    stripped = strip_type_flips(data)
    return fu.convert_bytearray_to_object(bytearray(stripped[0] if stripped else data))


def profile(model, threads: int = 2, rounds: int = 9, iters: int = 10) -> list[dict]:
    """``model`` from :func:`_load`. One row per operator: ``{"i", "op", "ms", "inputs", "output"}`` (median ms of one invoke)."""
    import numpy as np
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.tools import flatbuffer_utils as fu

    sub = model.subgraphs[0]
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    rng = np.random.default_rng(0)

    def constant(t: int) -> bool:
        buf = model.buffers[sub.tensors[t].buffer]
        return buf.data is not None and len(buf.data) > 0

    rows = []
    for i, op in enumerate(sub.operators):
        one = copy.deepcopy(model)
        s = one.subgraphs[0]
        s.operators = [s.operators[i]]
        ins = [int(t) for t in op.inputs if t >= 0 and not constant(int(t))]
        s.inputs = np.array(ins, np.int32)
        s.outputs = np.array([int(t) for t in op.outputs], np.int32)
        one.signatureDefs = []
        it = Interpreter(model_content=bytes(fu.convert_object_to_bytearray(one)), num_threads=threads)
        it.allocate_tensors()
        for d in it.get_input_details():
            lo, hi = (-100, 100) if np.issubdtype(d["dtype"], np.integer) else (-1, 1)
            it.set_tensor(d["index"], rng.uniform(lo, hi, d["shape"]).astype(d["dtype"]))
        code = model.operatorCodes[op.opcodeIndex]
        rows.append({"i": i, "op": names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?"),
                     "ms": _median_ms(it, rounds, iters), "inputs": [list(sub.tensors[t].shape) for t in ins],
                     "output": list(sub.tensors[int(op.outputs[0])].shape)})
    return rows


def whole_graph_ms(model, threads: int, rounds: int = 9, iters: int = 10) -> float:
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.tools import flatbuffer_utils as fu

    it = Interpreter(model_content=bytes(fu.convert_object_to_bytearray(model)), num_threads=threads)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    return _median_ms(it, rounds, iters)


def _median_ms(it, rounds: int, iters: int) -> float:
    """Median over ``rounds`` of the mean ms of ``iters`` invokes, after one untimed invoke."""
    it.invoke()  # XNNPACK packs weights on the first call
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(iters):
            it.invoke()
        times.append((time.perf_counter() - t) / iters * 1e3)
    return statistics.median(times)


def _shape(row) -> str:
    src = row["inputs"][0] if row["inputs"] else []
    return f"{'x'.join(map(str, src[1:]))} -> {'x'.join(map(str, row['output'][1:]))}"


def report(path: str, rows: list[dict], whole: float, top: int) -> None:
    total = sum(r["ms"] for r in rows)
    print(f"\n{path}: {len(rows)} ops; one-op models sum to {total:.2f} ms, whole graph {whole:.2f} ms")
    by = collections.Counter()
    for r in rows:
        by[r["op"]] += r["ms"]
    print("  by op type: " + ", ".join(f"{k} {v:.2f}" for k, v in by.most_common()))
    print(f"  {'#':>4} {'op':<18} {'ms':>7}  shapes")
    for r in sorted(rows, key=lambda r: -r["ms"])[:top]:
        print(f"  {r['i']:>4} {r['op']:<18} {r['ms']:>7.3f}  {_shape(r)}")


def compare(int8: list[dict], fp32: list[dict], top: int) -> None:
    a = [r for r in int8 if r["op"] in COMPUTE]
    b = [r for r in fp32 if r["op"] in COMPUTE]
    pairs = [(x, y) for x, y in zip(a, b) if x["op"] == y["op"] and x["output"] == y["output"]]
    if len(pairs) != len(a):
        print(f"\nconvolutions pair up only partly ({len(pairs)} of {len(a)}); comparing those")
    res = collections.defaultdict(lambda: [0.0, 0.0, 0])
    for x, y in pairs:
        k = x["output"][1]
        res[k][0] += x["ms"]
        res[k][1] += y["ms"]
        res[k][2] += 1
    print("\nconvolutions by output resolution (int8 / fp32 ms; ratio > 1: int8 slower)")
    for k in sorted(res, reverse=True):
        i8, f32, n = res[k]
        print(f"  {k:>4}x{k:<4} {n:>3} convs  int8 {i8:6.2f}  fp32 {f32:6.2f}  ratio {i8 / f32:5.2f}  diff {i8 - f32:+6.2f}")
    i8, f32 = sum(x["ms"] for x, _ in pairs), sum(y["ms"] for _, y in pairs)
    print(f"  {'all':>9} {len(pairs):>3} convs  int8 {i8:6.2f}  fp32 {f32:6.2f}  ratio {i8 / f32:5.2f}  diff {i8 - f32:+6.2f}")
    print("\nlargest int8 losses (int8 - fp32 ms)")
    for x, y in sorted(pairs, key=lambda p: p[1]["ms"] - p[0]["ms"])[:top]:
        print(f"  {x['i']:>4} {x['op']:<18} {x['ms']:>7.3f} {y['ms']:>7.3f} {x['ms'] - y['ms']:+7.3f}  {_shape(x)}")


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help=".tflite file (int8 or float)")
    ap.add_argument("--fp32", help="the float .tflite of the same model, to compare op by op")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args(argv)
    print(f"threads {args.threads}; load {os.getloadavg()[0]:.2f}")
    model = _load(args.model)
    rows = profile(model, args.threads)
    report(args.model, rows, whole_graph_ms(model, args.threads), args.top)
    if args.fp32:
        fmodel = _load(args.fp32)
        frows = profile(fmodel, args.threads)
        report(args.fp32, frows, whole_graph_ms(fmodel, args.threads), args.top)
        compare(rows, frows, args.top)
    print(f"\nload after {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
