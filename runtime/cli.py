"""`edgedet detect` and `edgedet camera` (import-light: nothing heavy at module level)."""
from __future__ import annotations

import argparse
import json
import os
import sys


def _model_args(p: argparse.ArgumentParser, threads: str = "the profile's, else the library's") -> None:
    p.add_argument("--model", required=True, help=".tflite, .onnx, OpenVINO .xml or folder")
    p.add_argument("--device", help="device profile (see `edgedet devices`) or backend device: cpu, usb:0, pci:0, nnapi, GPU, NPU, AUTO")
    p.add_argument("--threads", type=int, help=f"CPU threads (default: {threads})")
    p.add_argument("--fallback", choices=["cpu"], help="run on CPU when the delegate/device is missing (never silent otherwise)")
    p.add_argument("--score", type=float, default=0.3, help="score threshold (default 0.3)")
    p.add_argument("--iou", type=float, default=0.5, help="NMS IoU threshold (default 0.5)")
    p.add_argument("--max-det", type=int, default=100, help="detections per image (default 100)")
    p.add_argument("--nms", choices=["class", "global"], default="class", help="per-class or class-agnostic NMS")
    p.add_argument("--soft-nms", action="store_true", help="Gaussian soft-NMS")
    p.add_argument("--labels", help="labels file, one name per line (overrides/supplies the model's)")
    p.add_argument("--image-size", type=int, nargs="+", metavar="N", help="input size H [W] for a model without metadata")
    p.add_argument("--mean", type=float, nargs="+", help="normalisation mean (pixel units) for a model without metadata")
    p.add_argument("--std", type=float, nargs="+", help="normalisation std (pixel units) for a model without metadata")


def register(sub) -> None:
    p = sub.add_parser("detect", help="run a model on images, a folder or a video",
                       description="Detect objects with an exported model (numpy-only runtime; no TensorFlow needed).")
    p.add_argument("inputs", nargs="+", metavar="IMAGE|DIR|VIDEO")
    _model_args(p)
    p.add_argument("--save", metavar="OUT", help="write annotated images/videos into this folder (or this file for one image)")
    p.add_argument("--json", action="store_true", help="print detections as JSON")
    p.set_defaults(func=run_detect)

    c = sub.add_parser("camera", help="live demo: camera, video file or image folder with boxes and FPS",
                       description="Live detection demo. Press q (or Ctrl-C) to stop.")
    _model_args(c, threads="the profile's, else every core but one unless --sequential: capture, "
                "pre- and post-processing run on their own threads during invoke")
    c.add_argument("--source", default="0", help="camera index, video file or image folder (default 0)")
    c.add_argument("--headless", action="store_true", help="no window (use with --save)")
    c.add_argument("--save", metavar="OUT.mp4", help="write the annotated video")
    c.add_argument("--max-frames", type=int, help="stop after N frames")
    c.add_argument("--sequential", action="store_true",
                   help="one frame at a time on one thread (default: the next frame is read and pre-processed during invoke)")
    c.set_defaults(func=run_camera_cmd)


def _detector(args):
    from edgedet.runtime.detector import Detector  # noqa: PLC0415

    size = args.image_size
    if size is not None:
        size = (size[0], size[0]) if len(size) == 1 else (size[0], size[1])
    return Detector.from_file(
        args.model, device=args.device, threads=args.threads, fallback=args.fallback, labels=args.labels,
        image_size=size, mean=args.mean, std=args.std, score_threshold=args.score, iou_threshold=args.iou,
        max_detections=args.max_det, nms=args.nms, soft=args.soft_nms,
    )


def _expand(inputs) -> list[tuple[str, str]]:
    """``[(kind, path)]`` with kind "image" or "video"; folders expand to their images (sorted)."""
    from edgedet.errors import DataError  # noqa: PLC0415
    from edgedet.runtime.camera import VIDEO_SUFFIXES  # noqa: PLC0415
    from edgedet.runtime.preprocess import is_image_file  # noqa: PLC0415

    out = []
    for path in inputs:
        if os.path.isdir(path):
            files = sorted(f for f in os.listdir(path) if is_image_file(f))
            if not files:
                raise DataError(f"{path}: no images in this folder")
            out += [("image", os.path.join(path, f)) for f in files]
        elif path.lower().endswith(VIDEO_SUFFIXES):
            if not os.path.isfile(path):
                raise DataError(f"{path}: no such video file")
            out.append(("video", path))
        else:
            out.append(("image", path))  # load_image reports missing/non-image files
    return out


def _save_path(save: str, src: str, n_inputs: int, suffix: str) -> str:
    if n_inputs == 1 and os.path.splitext(save)[1] and not os.path.isdir(save):
        return save
    return os.path.join(save, os.path.splitext(os.path.basename(src))[0] + suffix)


def _save_image(path: str, rgb) -> None:
    from PIL import Image  # noqa: PLC0415

    from edgedet.files import atomic_path

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp)


def run_detect(args: argparse.Namespace) -> int:
    from edgedet.runtime.draw import draw_detections  # noqa: PLC0415
    from edgedet.runtime.preprocess import load_image  # noqa: PLC0415

    items = _expand(args.inputs)
    det = _detector(args)
    info = det.describe()
    if not args.json:
        print(f"model {args.model}: {info['backend']} {info['version']} on {info['device']}"
              f"{' threads=' + str(info['threads']) if info['threads'] else ''}, input {det.input.size[0]}x{det.input.size[1]}, "
              f"{len(det.labels)} classes (loaded in {det.load_seconds * 1000:.0f} ms)")
    results = []
    for kind, path in items:
        if kind == "video":
            results.append(_detect_video(det, path, args))
            continue
        image = load_image(path)
        dets = det.detect(image)
        t = {k: round(v * 1000, 2) for k, v in det.last_timing.items()}
        results.append({"image": path, "width": image.shape[1], "height": image.shape[0], "timing_ms": t,
                        "detections": dets.to_list()})
        if not args.json:
            print(f"{path}: {len(dets)} detections  (pre {t['pre']:.1f} ms, invoke {t['invoke']:.1f} ms, post {t['post']:.1f} ms)")
            for d in dets.to_list():
                x1, y1, x2, y2 = d["box"]
                print(f"  {d['label']:<16} {d['score']:.3f}  [{x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}]")
        if args.save:
            out = _save_path(args.save, path, len(items), ".jpg")
            _save_image(out, draw_detections(image, dets))
            if not args.json:
                print(f"  saved {out}")
    if args.json:
        json.dump({"model": args.model, "runtime": info, "results": results}, sys.stdout, indent=1)
        print()
    return 0


def _detect_video(det, path: str, args) -> dict:
    from edgedet.runtime.camera import FrameSource, run_camera  # noqa: PLC0415

    out = _save_path(args.save, path, 1 if args.save and args.save.lower().endswith((".mp4", ".avi")) else 2, ".mp4") if args.save else None
    stats = run_camera(det, FrameSource(path), headless=True, save=out)
    if not args.json:
        print(f"{path}: {stats['frames']} frames ({stats['dropped']} dropped), median invoke {stats['invoke_ms']} ms"
              + (f"; saved {out}" if out else ""))
    return {"video": path, **stats, "saved": out}


def run_camera_cmd(args: argparse.Namespace) -> int:
    from edgedet.runtime.camera import FrameSource, run_camera  # noqa: PLC0415

    if args.headless and not args.save:
        print("edgedet: note: --headless without --save shows and saves nothing; printing stats only", file=sys.stderr)
    if not args.sequential and args.threads is None and args.device is None:
        from edgedet.runtime.camera import pipeline_threads  # noqa: PLC0415

        args.threads = pipeline_threads()
    det = _detector(args)
    source = FrameSource(args.source)
    stats = run_camera(det, source, headless=args.headless, save=args.save, max_frames=args.max_frames,
                       sequential=args.sequential)
    print(f"camera: {stats['frames']} frames, {stats['dropped']} dropped, {stats['fps']} FPS ({stats['mode']}), "
          f"median inference {stats['invoke_ms']} ms, stopped by {stats['stopped']}" + (f"; saved {args.save}" if args.save else ""))
    return 0
