"""Post-processing cost for Lite0 @ 320 px with the 90-class COCO head: decode + NMS from raw outputs.

Raw outputs are synthetic but shaped like a trained detector's: most logits are strongly
negative (background), a few dozen objects score high, each object lights up several
neighbouring anchors (so NMS has real suppression to do), and box deltas are small.
Both float32 outputs and int8 outputs (thresholded as integers) are measured.

Run pinned to one core for the acceptance figure:
    taskset -c 0 python benchmarks/bench_postprocess.py
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from edgedet.runtime.anchors import AnchorConfig, feature_sizes, generate_anchors
from edgedet.runtime.postprocess import postprocess, score_to_logit


def make_outputs(size: int = 320, num_classes: int = 90, objects: int = 15, seed: int = 0):
    """Float per-level class logits (H, W, A*C) and box deltas (H, W, A*4)."""
    rng = np.random.default_rng(seed)
    cfg = AnchorConfig()
    a = cfg.num_anchors
    levels = feature_sizes((size, size))
    cls = [rng.normal(-7.0, 1.3, (h, w, a * num_classes)).astype(np.float32) for h, w in levels]
    box = [rng.normal(0.0, 0.25, (h, w, a * 4)).astype(np.float32) for h, w in levels]
    for _ in range(objects):
        lv = int(rng.integers(0, 3))
        h, w = levels[lv]
        y, x, c = int(rng.integers(0, h)), int(rng.integers(0, w)), int(rng.integers(0, num_classes))
        peak, k0 = rng.uniform(0.5, 4.0), int(rng.integers(0, a))
        # the object fires its neighbourhood: 3x3 positions x nearby anchor shapes, decaying
        # away from the best (position, anchor)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                yy, xx = min(max(y + dy, 0), h - 1), min(max(x + dx, 0), w - 1)
                for k in range(a):
                    v = peak - 2.0 * (abs(dy) + abs(dx)) - 1.0 * abs(k - k0)
                    cls[lv][yy, xx, k * num_classes + c] = max(v, cls[lv][yy, xx, k * num_classes + c])
    return cls, box, generate_anchors(size, cfg)


def quantize(arrs, scale: float, zp: int):
    return [np.clip(np.round(x / scale) + zp, -128, 127).astype(np.int8) for x in arrs]


def median_ms(fn, repeats: int, warmup: int = 20) -> tuple[float, float]:
    """(wall, CPU) medians in ms. CPU time (thread_time) is what the call costs on its core even
    when other processes compete for it; wall time is what a user sees on an idle device."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.thread_time()
        fn()
        cpu.append(time.thread_time() - c)
        wall.append(time.perf_counter() - t)
    return statistics.median(wall) * 1000, statistics.median(cpu) * 1000


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--classes", type=int, default=90)
    ap.add_argument("--score", type=float, default=0.3)
    ap.add_argument("--repeats", type=int, default=300)
    ap.add_argument("--cpu", type=int, default=0, help="pin to this core (Linux), -1 = don't pin")
    ap.add_argument("--model", help="also measure pre/invoke/post of this model file on --image (runtime overhead)")
    ap.add_argument("--image", help="image for --model (default: first BCCD image in ../shared)")
    ap.add_argument("--threads", type=int, default=2, help="interpreter threads for --model (default 2)")
    args = ap.parse_args(argv)
    if args.cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    cls, box, anchors = make_outputs(args.size, args.classes)
    cscale, bscale = 0.08, 0.01
    qcls, qbox = quantize(cls, cscale, 40), quantize(box, bscale, 0)
    n_values = sum(c.size for c in cls)
    res = {}
    res["float32"] = median_ms(lambda: postprocess(cls, box, anchors, args.score), args.repeats)
    res["int8"] = median_ms(lambda: postprocess(qcls, qbox, anchors, args.score, class_quant=(cscale, 40), box_quant=(bscale, 0)), args.repeats)
    res["float32_soft"] = median_ms(lambda: postprocess(cls, box, anchors, args.score, soft=True), args.repeats)
    res["float32_eval_thr0.05"] = median_ms(lambda: postprocess(cls, box, anchors, 0.05), max(20, args.repeats // 5))
    d = postprocess(cls, box, anchors, args.score)
    thr = score_to_logit(args.score)
    cand = sum(int((c > thr).sum()) for c in cls)
    print(f"Lite0@{args.size}, {args.classes} classes: {len(anchors)} anchors, {n_values / 1e6:.2f} M class logits, "
          f"{cand} candidates and {len(d)} detections at score>{args.score}; one core, median of {args.repeats}")
    for k, (w, c) in res.items():
        print(f"  postprocess {k:<22} wall {w:6.3f} ms   cpu {c:6.3f} ms")
    if args.model:
        res["model"] = overhead(args.model, args.image, args.threads, max(30, args.repeats // 4), args.score)
    return res


def overhead(model: str, image: str | None, threads: int, repeats: int, score: float) -> dict:
    """Median pre / invoke / post of ``Detector.detect`` on one image; overhead = (pre + post) / invoke.

    Pre and post run on the calling thread, so their CPU time (thread_time) is reported next to
    wall time; invoke uses ``threads`` interpreter threads and is reported as wall time.
    """
    from pathlib import Path

    from edgedet.runtime.detector import Detector
    from edgedet.runtime.preprocess import load_image

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))  # invoke gets its threads
    if image is None:
        shared = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "bccd" / "JPEGImages"
        image = str(sorted(shared.glob("*.jpg"))[0])
    img = load_image(image)
    det = Detector.from_file(model, threads=threads, score_threshold=score)
    det.warmup(3)
    rows = {"pre": [], "invoke": [], "post": [], "pre_cpu": [], "post_cpu": []}
    for _ in range(repeats):
        c0 = time.thread_time()
        x, scales, hw = det.preprocess(img)
        c1 = time.thread_time()
        t1 = time.perf_counter()
        outs = det.backend.run(x)
        t2 = time.perf_counter()
        c2 = time.thread_time()
        dets = det.decode(outs, scales, hw)
        del outs
        c3 = time.thread_time()
        t3 = time.perf_counter()
        rows["invoke"].append(t2 - t1)
        rows["post"].append(t3 - t2)
        rows["pre_cpu"].append(c1 - c0)
        rows["post_cpu"].append(c3 - c2)
        t0 = time.perf_counter()
        det.preprocess(img)
        rows["pre"].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1000 for k, v in rows.items()}
    ratio = (med["pre_cpu"] + med["post_cpu"]) / med["invoke"]
    print(f"{model} ({det.meta.target}, {len(det.labels)} classes, {threads} threads) on {Path(image).name} "
          f"{img.shape[1]}x{img.shape[0]}: {len(dets)} detections; median of {repeats}")
    print(f"  pre  wall {med['pre']:6.2f} ms  cpu {med['pre_cpu']:6.2f} ms")
    print(f"  invoke wall {med['invoke']:6.2f} ms")
    print(f"  post wall {med['post']:6.2f} ms  cpu {med['post_cpu']:6.2f} ms")
    print(f"  runtime overhead (pre + post CPU) / invoke = {ratio * 100:.1f}%")
    return {**med, "overhead": ratio}


if __name__ == "__main__":
    main()
