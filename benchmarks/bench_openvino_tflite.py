"""Could OpenVINO run our int8 ``.tflite`` faster than LiteRT? Speed yes, accuracy no.

OpenVINO reads ``.tflite`` files directly (its TensorFlow Lite front end) and its CPU plugin has
AVX2 int8 kernels, so it is the obvious way to make an int8 file pay off on an x86 CPU without
VNNI. This measures both halves of that idea:

* latency: the Lite0@320 90-class files of ``bench_latency_lite0.py`` (same ``--work`` cache),
  invoke only, ``--threads`` threads, LiteRT (as the runtime runs it) vs OpenVINO (LATENCY hint),
  interleaved, medians;
* accuracy (``--model``, ``--data``): COCO AP of int8 files on a dataset's test split through the
  runtime's Detector with each engine behind it (OpenVINO gets the file's quantisation parameters,
  read with LiteRT, so both decode the same way).

Measured 2026-11-22 on the 2-core AMD EPYC VM (two runs): int8 invoke OpenVINO 17.27 / 17.37 ms vs
LiteRT 18.97 / 19.06 (fp32: 22.05 / 22.82 vs 17.86 / 18.28); but BCCD AP 46.41 -> 38.23 (QAT
file) and 45.25 -> 24.99 (PTQ file): its TFLite front end does not reproduce LiteRT's integer
arithmetic, so the runtime does not offer it. Even so, 17.3 ms + 2.4 ms decode + NMS is not 18.

    python benchmarks/bench_openvino_tflite.py [--threads 2] [--rounds 15]
        [--model runs/bccd_export/qat/lite0_tflite-int8.tflite --data ../shared/datasets/bccd]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))


class OpenVINOOnTFLite:
    """A runtime backend (``run(x) -> outputs``) that compiles a ``.tflite`` with OpenVINO."""

    name = "openvino-tflite"

    def __init__(self, path: str, threads: int):
        import openvino as ov
        from ai_edge_litert.interpreter import Interpreter

        from edgedet.runtime.backends.openvino import _spec

        it = Interpreter(model_path=path)
        it.allocate_tensors()
        quant = {d["name"]: d["quantization"] for d in it.get_input_details() + it.get_output_details()}
        cm = ov.Core().compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
        self.request = cm.create_infer_request()
        self.inputs, self.outputs = [_spec(p) for p in cm.inputs], [_spec(p) for p in cm.outputs]
        for spec in self.inputs + self.outputs:  # OpenVINO does not expose the TFLite scales
            q = quant.get(spec.name)
            spec.quant = (float(q[0]), int(q[1])) if q and q[0] else None

    def run(self, x):
        self.request.infer({0: x})
        return [self.request.get_output_tensor(i).data for i in range(len(self.outputs))]


def latency(work: Path, threads: int, rounds: int, iters: int = 4) -> dict:
    from bench_latency_lite0 import export_variants

    from edgedet.runtime.backends.litert import LiteRTBackend

    paths = export_variants(work, log=lambda m: print(f"[convert] {m}", file=sys.stderr))
    runners = {}
    for label in ("tflite-fp32", "tflite-int8"):
        p = paths[label]
        for engine, backend in (("litert", LiteRTBackend(p, threads=threads)), ("openvino", OpenVINOOnTFLite(p, threads))):
            spec = backend.inputs[0]
            x = np.random.default_rng(0).integers(0, 255, spec.shape).astype(spec.dtype)
            # Drop the outputs at once: LiteRT's zero-copy views must not outlive the next run.
            runners[f"{engine} {label}"] = (lambda b, v: (lambda: b.run(v) and None))(backend, x)
    for f in runners.values():
        f()
        f()
    times = {k: [] for k in runners}
    for _ in range(rounds):
        for k, f in runners.items():
            for _ in range(iters):
                t = time.perf_counter()
                f()
                times[k].append((time.perf_counter() - t) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def accuracy(model: str, data: str, threads: int) -> dict:
    from edgedet.runtime import Detector
    from edgedet.runtime.report.evaluate import coco_evaluate
    from edgedet.runtime.metadata import read_metadata
    from edgedet.runtime.preprocess import load_image
    from edgedet.runtime.report.validate import load_samples

    samples, names = load_samples(data, "test")
    images = [load_image(s.image_path) for s in samples]
    out = {}
    for engine in ("litert", "openvino"):
        if engine == "litert":
            det = Detector.from_file(model, threads=threads, score_threshold=0.001)
        else:
            det = Detector(OpenVINOOnTFLite(model, threads), read_metadata(model), path=model, score_threshold=0.001)
        m = coco_evaluate(samples, [det.detect(im) for im in images], names)
        out[engine] = {"AP": m["AP"], "AP50": m["AP50"]}
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--work", default=os.environ.get("EDGEDET_BENCH_WORK", "/tmp/edgedet-bench-lite0"))
    ap.add_argument("--model", action="append", default=[], help="int8 .tflite to score with both engines")
    ap.add_argument("--data", help="dataset for --model (its test split)")
    args = ap.parse_args(argv)
    print(f"invoke medians, Lite0 320 px, 90 classes, {args.threads} threads (ms):")
    for k, v in latency(Path(args.work), args.threads, args.rounds).items():
        print(f"  {k:<24}{v:8.2f}")
    if args.model and not args.data:
        sys.exit("--model needs --data")
    for m in args.model:
        r = accuracy(m, args.data, args.threads)
        print(f"{m}: LiteRT AP {100 * r['litert']['AP']:.2f} (AP50 {100 * r['litert']['AP50']:.2f}), "
              f"OpenVINO AP {100 * r['openvino']['AP']:.2f} (AP50 {100 * r['openvino']['AP50']:.2f})")


if __name__ == "__main__":
    main()
