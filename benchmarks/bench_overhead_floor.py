"""The least work any host code can do around invoke, next to what the runtime does, in one loop.

Floor of post-processing: one SIMD read pass over every level's class logits right after invoke
(``cv2.minMaxLoc``), with no candidate work at all. Floor of pre-processing: OpenCV's box-filter
``INTER_AREA`` resize straight into the canvas plus the int8 input flip (a sharper filter than
training's, so a lower bound, not a usable path). Both are measured after their own invoke,
interleaved with the runtime's own pre-processing and decode, as CPU ms of the calling thread:

    python benchmarks/bench_overhead_floor.py --model lite0_tflite-int8.tflite --image photo.jpg
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=500)
    args = ap.parse_args(argv)
    import cv2

    from edgedet.runtime.detector import Detector
    from edgedet.runtime.preprocess import load_image

    det = Detector.from_file(args.model, threads=args.threads)
    img = load_image(args.image)
    x, scales, hw = det.preprocess(img)
    det.warmup(5)
    (h, w), s = det.input.size, min(det.input.size[0] / img.shape[0], det.input.size[1] / img.shape[1])
    rh, rw = round(img.shape[0] * s), round(img.shape[1] * s)
    canvas = np.zeros((1, h, w, 3), np.uint8)
    rows: dict[str, list] = {k: [] for k in ("invoke", "pre", "post", "pre_floor", "post_floor")}

    def cpu(key, fn):
        c = time.thread_time()
        fn()
        rows[key].append(time.thread_time() - c)

    def scan(outs):
        for a in det._raw.split(outs, 0)[0]:
            cv2.minMaxLoc(a.reshape(-1, a.shape[-1]))

    for _ in range(args.repeats):
        cpu("pre", lambda: det.preprocess(img))
        cpu("pre_floor", lambda: cv2.resize(img, (rw, rh), dst=canvas[0, :rh, :rw], interpolation=cv2.INTER_AREA).view(np.int8) ^ np.int8(-128))
        t = time.perf_counter()
        outs = det.backend.run(x)
        rows["invoke"].append(time.perf_counter() - t)
        cpu("post", lambda: det.decode(outs, scales, hw))
        outs = None  # zero-copy views must go before the next invoke
        outs = det.backend.run(x)
        cpu("post_floor", lambda: scan(outs))
        outs = None
    med = {k: statistics.median(v) * 1000 for k, v in rows.items()}
    med["ratio"] = (med["pre"] + med["post"]) / med["invoke"]
    med["floor_ratio"] = (med["pre_floor"] + med["post_floor"]) / med["invoke"]
    print(f"{os.path.basename(args.model)}: invoke {med['invoke']:.2f} ms; load avg {os.getloadavg()[0]:.2f}; CPU ms, medians of {args.repeats}")
    print(f"  runtime: pre {med['pre']:.3f} + post {med['post']:.3f} = {med['ratio'] * 100:.1f} % of invoke")
    print(f"  floor:   pre {med['pre_floor']:.3f} + post {med['post_floor']:.3f} = {med['floor_ratio'] * 100:.1f} % of invoke")
    return med


if __name__ == "__main__":
    main()
