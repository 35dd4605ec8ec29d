"""Post-processing cost for Lite0 @ 320 px with the 90-class COCO head: decode + NMS from raw outputs.

Raw outputs are synthetic but shaped like a trained detector's: most logits are strongly
negative (background), a few dozen objects score high, each object lights up several
neighbouring anchors (so NMS has real suppression to do), and box deltas are small.
Both float32 outputs and int8 outputs (thresholded as integers) are measured.

``--size 512`` gives the D0@512 figure (49,104 anchors, 4.4 M class logits with 90 classes).

With ``--model A.tflite [B ...]`` it also measures pre / invoke / post of real files on a JPEG
(default: the first BCCD photo, 640x480), all models and pre-processing paths interleaved in
the same run, and prints the runtime overhead (pre + post) / invoke:

    python benchmarks/bench_postprocess.py --repeats 100 --model lite0_int8.tflite lite0_fp32.tflite d0_int8.tflite
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
    ap.add_argument("--model", nargs="+", help="also measure pre/invoke/post of these model files on --image (runtime overhead)")
    ap.add_argument("--image", help="image for --model (default: first BCCD image in ../shared)")
    ap.add_argument("--threads", type=int, default=2, help="interpreter threads for --model (default 2)")
    ap.add_argument("--rounds", type=int, default=20, help="interleaved rounds for --model (5 detections each)")
    ap.add_argument("--json", help="write the results here")
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
    print(f"{args.size} px, {args.classes} classes: {len(anchors)} anchors, {n_values / 1e6:.2f} M class logits, "
          f"{cand} candidates and {len(d)} detections at score>{args.score}; one core, median of {args.repeats}")
    for k, (w, c) in res.items():
        print(f"  postprocess {k:<22} wall {w:6.3f} ms   cpu {c:6.3f} ms")
    if args.model:
        res["models"] = overhead(args.model, args.image, args.threads, args.rounds, args.score)
    if args.json:
        import json

        with open(args.json, "w") as f:
            json.dump(res, f, indent=1, default=float)
    return res


def _stage_ms(fn) -> tuple[float, float, object]:
    """(wall ms, this thread's CPU ms, result) of one call."""
    c, t = time.thread_time(), time.perf_counter()
    out = fn()
    return (time.perf_counter() - t) * 1000, (time.thread_time() - c) * 1000, out


def overhead(models: list[str], image: str | None, threads: int, rounds: int, score: float, iters: int = 5) -> dict:
    """Median pre / invoke / post per model on one JPEG, all models and paths interleaved in one run.

    Pre-processing is timed four ways on every iteration: the frame as an array (a camera
    frame: resize + input quantisation) and the JPEG file (decode included), each with the
    fast path (decoder downscale / OpenCV) and the reference path (full decode, Pillow
    BILINEAR; ``EDGEDET_RESIZE=pillow``). Pre and post run on the calling thread, so their CPU
    time (thread_time) is reported next to wall time; invoke runs ``threads`` interpreter
    threads and is wall time. Overhead = (pre + post CPU) / invoke.
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
    dets = {m: Detector.from_file(m, threads=threads, score_threshold=score) for m in models}
    keys = ("pre_array", "pre_file", "pre_array_ref", "pre_file_ref", "invoke", "post")
    rows = {m: {k: [] for k in keys} | {k + "_cpu": [] for k in keys} for m in models}
    counts = {}
    for d in dets.values():
        d.warmup(3)
    for _ in range(rounds):
        for m, det in dets.items():
            r = rows[m]
            for _ in range(iters):
                for key, src, ref in (("pre_array_ref", img, True), ("pre_file_ref", image, True),
                                      ("pre_file", image, False), ("pre_array", img, False)):
                    if ref:
                        os.environ["EDGEDET_RESIZE"] = "pillow"
                    w, c, prepared = _stage_ms(lambda: det.preprocess(src))
                    os.environ.pop("EDGEDET_RESIZE", None)
                    r[key].append(w)
                    r[key + "_cpu"].append(c)
                x, scales, hw = prepared
                w, c, outs = _stage_ms(lambda: det.backend.run(x))
                r["invoke"].append(w)
                w, c, found = _stage_ms(lambda: det.decode(outs, scales, hw))
                outs = None  # zero-copy views must go before the next invoke
                r["post"].append(w)
                r["post_cpu"].append(c)
                counts[m] = len(found)
    res = {}
    print(f"{Path(image).name} {img.shape[1]}x{img.shape[0]}, {threads} threads, {rounds}x{iters} interleaved runs; "
          f"load avg {os.getloadavg()[0]:.2f}; medians in ms (CPU time of the calling thread for pre and post)")
    print(f"{'model':<44}{'invoke':>8}{'post':>7}{'pre arr':>8}{'pre jpg':>8}{'ref arr':>8}{'ref jpg':>8}"
          f"{'ovh arr':>8}{'ovh jpg':>8}{'ref arr':>8}{'ref jpg':>8}")
    for m in models:
        med = {k: statistics.median(v) for k, v in rows[m].items() if v}
        inv, post = med["invoke"], med["post_cpu"]
        med["overhead"] = {k: (med[f"pre_{k}_cpu"] + post) / inv for k in ("array", "file", "array_ref", "file_ref")}
        med["detections"] = counts[m]
        o = med["overhead"]
        name = f"{Path(m).name} ({len(dets[m].labels)} cl, {dets[m].input.size[0]} px)"
        print(f"{name:<44}{inv:>8.2f}{post:>7.2f}{med['pre_array_cpu']:>8.2f}{med['pre_file_cpu']:>8.2f}"
              f"{med['pre_array_ref_cpu']:>8.2f}{med['pre_file_ref_cpu']:>8.2f}"
              f"{o['array'] * 100:>7.1f}%{o['file'] * 100:>7.1f}%{o['array_ref'] * 100:>7.1f}%{o['file_ref'] * 100:>7.1f}%")
        res[m] = med
    return res


if __name__ == "__main__":
    main()
