"""`edgedet camera --headless` frames per second: pipelined (default) vs ``--sequential``.

A 640x480 MP4 clip is made from BCCD photos (each shown for a few frames, panned by a few
pixels per frame so consecutive frames differ), then the camera loop runs over it in both modes,
interleaved (sequential, pipelined, sequential, ... ``--rounds`` times each), with the same
model, each mode with its own interpreter threads (by default what `edgedet camera` uses in that mode). Reported: median FPS (frames / wall second over the whole clip) per mode, their
ratio, the load average, and whether every frame's detections were identical in both modes.

    python benchmarks/bench_camera.py --model runs/bccd/5_convert/lite0_tflite-int8.tflite [--threads N | --seq-threads N] [--rounds 5] [--save]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEDET_SHARED", REPO.parent / "shared"))


def make_clip(path: Path, frames: int = 150, hold: int = 5) -> Path:
    """A 640x480 mp4v clip of BCCD photos, ``hold`` frames each, panned 4 px per frame."""
    import cv2

    from edgedet.runtime.preprocess import load_image

    if path.is_file():
        return path
    files = sorted(glob.glob(str(SHARED / "datasets" / "bccd" / "JPEGImages" / "*.jpg")))
    if not files:
        sys.exit(f"no BCCD images under {SHARED} (set EDGEDET_SHARED)")
    tmp = path.with_suffix(".tmp.mp4")
    out = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (640, 480))
    for i in range(frames):
        img = cv2.resize(load_image(files[(i // hold) % len(files)]), (640, 480))
        out.write(np.ascontiguousarray(np.roll(img, 4 * (i % hold), axis=1)[..., ::-1]))
    out.release()
    os.replace(tmp, path)
    return path


def run_once(det, clip: Path, sequential: bool, save: str | None = None) -> tuple[dict, list]:
    from edgedet.runtime.camera import run_camera
    from edgedet.runtime.frames import FrameSource

    found: list = []
    stats = run_camera(det, FrameSource(str(clip)), headless=True, sequential=sequential, save=save,
                       on_detections=lambda i, d: found.append((d.boxes.copy(), d.scores.copy(), d.classes.copy())))
    return stats, found


def same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(all(np.array_equal(x, y) for x, y in zip(fa, fb)) for fa, fb in zip(a, b))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, help="interpreter threads for both modes (default: each mode's "
                    "`edgedet camera` default: the library's for --sequential, every core but one pipelined)")
    ap.add_argument("--seq-threads", type=int, help="interpreter threads for --sequential only (overrides --threads)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--clip", default="/tmp/edgedet-bench-camera/bccd_640x480.mp4")
    ap.add_argument("--save", action="store_true", help="also write the annotated video (as `--save out.mp4`)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    from edgedet.runtime.camera import pipeline_threads
    from edgedet.runtime.detector import Detector

    clip = Path(args.clip)
    clip.parent.mkdir(parents=True, exist_ok=True)
    make_clip(clip, args.frames)
    threads = {"sequential": args.seq_threads or args.threads, "pipelined": args.threads or pipeline_threads()}
    dets = {m: Detector.from_file(args.model, threads=t) for m, t in threads.items()}
    for d in dets.values():
        d.warmup(3)
    det = dets["sequential"]
    fps = {"sequential": [], "pipelined": []}
    identical = True
    reference = None
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    for _ in range(args.rounds):
        for mode in ("sequential", "pipelined"):
            out = str(clip.parent / f"annotated_{mode}.mp4") if args.save else None
            stats, found = run_once(dets[mode], clip, mode == "sequential", out)
            fps[mode].append(stats["fps"])
            reference = found if reference is None else reference
            identical &= same(reference, found)
    med = {k: statistics.median(v) for k, v in fps.items()}
    ratio = med["pipelined"] / med["sequential"]
    # each round runs both modes back to back: the per-round ratio cancels slow drifts in load
    paired = statistics.median(p / q for p, q in zip(fps["pipelined"], fps["sequential"]) if q)
    print(f"{Path(args.model).name}, {det.input.size[0]} px, threads {threads}, {len(reference)} frames 640x480{' saved' if args.save else ''}, "
          f"{args.rounds} interleaved rounds ({time.perf_counter() - t0:.0f} s); load avg before {load0:.2f}, "
          f"after {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs")
    for k, v in fps.items():
        print(f"  {k:<11} median {med[k]:6.2f} FPS   runs: {', '.join(f'{x:.1f}' for x in v)}")
    print(f"  pipelined / sequential = {ratio:.2f}x (median of per-round ratios {paired:.2f}x); "
          f"detections identical in every frame of every run: {identical}")
    res = {"fps": fps, "median_fps": med, "ratio": ratio, "paired_ratio": paired, "identical": identical, "frames": len(reference),
           "threads": threads, "load_before": load0, "load_after": os.getloadavg()[0]}
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    main()
