"""MediaPipe Tasks' ObjectDetector against the runtime's Detector on ``--nms`` files.

For each file and score threshold, every detection inside the frame (2 px margin) is paired
one for one: same label, score within 0.01, box within 1 px, both ways. Images are resized to
the network size first, so neither pipeline resizes or pads. MediaPipe keeps scores ``>=`` its
threshold and the runtime ``>``; MediaPipe gets the next float up (the same rule).

    python benchmarks/bench_mediapipe_parity.py --images 'runs/quick/1_data/synth/test/*.jpg' \\
        --count 100 --model a_tflite-int8.tflite b_tflite-fp32.tflite
"""
from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "convert"))
from test_mobile import _match  # noqa: E402  (the test's pairing rule, so both measure the same)


def parity(path: str, images: list[str], threshold: float) -> dict:
    import mediapipe as mp
    from mediapipe.tasks.python.core.base_options import BaseOptions
    from mediapipe.tasks.python.vision import object_detector as od
    from PIL import Image

    from edgedet.runtime import Detector

    det = Detector.from_file(path, score_threshold=threshold)
    h, w = det.input.size
    mp_thr = float(np.nextafter(np.float32(threshold), np.float32(1)))
    opts = od.ObjectDetectorOptions(base_options=BaseOptions(model_asset_path=path), score_threshold=mp_thr, max_results=-1)
    found = back = n_ours = 0.0
    worst = 1.0
    with od.ObjectDetector.create_from_options(opts) as mpd:
        for p in images:
            frame = np.asarray(Image.open(p).convert("RGB").resize((w, h), Image.BILINEAR))
            ours = det.detect(frame)
            theirs = mpd.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame)))
            f, b, n = _match(ours, [det.labels[int(c)] for c in ours.classes], theirs, h)
            found, back, n_ours, worst = found + f * n, back + b, n_ours + n, min(worst, f, b)
    return {"detections": int(n_ours), "found": found / max(n_ours, 1), "back": back / max(len(images), 1), "worst_image": worst}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", nargs="+", required=True, help="--nms .tflite files")
    ap.add_argument("--images", required=True, help="glob of images")
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.5])
    args = ap.parse_args(argv)
    images = sorted(glob.glob(args.images))[: args.count]
    for thr in args.thresholds:
        for m in args.model:
            r = parity(m, images, thr)
            print(f"score > {thr}: {m}: {r['detections']} in-frame detections; paired one for one: runtime -> MediaPipe "
                  f"{r['found']:.1%}, MediaPipe -> runtime {r['back']:.1%} (mean per image), worst image {r['worst_image']:.0%}")


if __name__ == "__main__":
    main()
