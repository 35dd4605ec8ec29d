"""COCO AP of the same model files through each pre-processing path (BCCD test split by default).

Paths, all with the same weights and the evaluation post-processing (score 0.001):
    * ``reference``: full JPEG decode, Pillow BILINEAR letterbox (``EDGEDET_RESIZE=pillow``), the
      path every figure before the fast paths was measured with;
    * ``jpeg``: the file path given to the detector: a JPEG four or more times the size it lands
      at is decoded reduced in the DCT domain (never below twice that size), then resized like
      an array (BCCD's 640x480 photos at 320 px are not reduced);
    * ``array``: full decode, then the array path (integer factors: OpenCV blur + ``INTER_AREA``,
      equal to Pillow's BILINEAR to one grey level), as a camera frame is handled.

    python benchmarks/bench_preprocess_ap.py --data ../shared/datasets/bccd --model RUN/5_convert/*.tflite [--split test]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

PATHS = ("reference", "jpeg", "array")


def detections(det, samples, path: str) -> list:
    from edgedet.runtime.preprocess import load_image

    out = []
    for s in samples:
        if path == "reference":
            os.environ["EDGEDET_RESIZE"] = "pillow"
        try:
            out.append(det.detect(str(s.image_path) if path == "jpeg" else load_image(s.image_path)))
        finally:
            os.environ.pop("EDGEDET_RESIZE", None)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", nargs="+", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    from edgedet.runtime.detector import Detector
    from edgedet.runtime.preprocess import resize_backend
    from edgedet.runtime.report.evaluate import EVAL_POSTPROCESS, coco_evaluate
    from edgedet.runtime.report.validate import load_samples

    samples, names = load_samples(args.data, args.split)
    print(f"{args.data} split {args.split}: {len(samples)} images; array resize: {resize_backend()}")
    res = {}
    for model in args.model:
        det = Detector.from_file(model, threads=args.threads, **EVAL_POSTPROCESS)
        row = {}
        for path in PATHS:
            t = time.perf_counter()
            ev = coco_evaluate(samples, detections(det, samples, path), names)
            row[path] = {k: float(ev[k]) for k in ("AP", "AP50", "AP75")}
            row[path]["seconds"] = round(time.perf_counter() - t, 1)
        ref = row["reference"]["AP"]
        print(f"{Path(model).name}: " + "; ".join(
            f"{p} AP {row[p]['AP'] * 100:.2f} (Δ {(row[p]['AP'] - ref) * 100:+.2f}) AP50 {row[p]['AP50'] * 100:.2f}" for p in PATHS))
        res[model] = row
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    main()
