"""`edgedet detect` and `edgedet camera` (import-light: nothing heavy at module level)."""
from __future__ import annotations

import argparse
import json
import os
import sys

from edgedet.argtypes import fraction, positive


FALLBACK_HELP = "run on CPU when the delegate/device is missing (never silent otherwise)"


def _model_args(p: argparse.ArgumentParser, threads: str = "the profile's, else the library's") -> None:
    p.add_argument("--model", required=True, help=".tflite, .onnx, OpenVINO .xml or folder")
    p.add_argument("--device", help="device profile (see `edgedet devices`) or backend device: cpu, usb:0, pci:0, nnapi, GPU, NPU, AUTO")
    p.add_argument("--threads", type=positive, help=f"CPU threads (default: {threads})")
    p.add_argument("--fallback", choices=["cpu"], help=FALLBACK_HELP)
    # No defaults in the parser for --score, --iou and --nms: an --nms file's in-graph NMS ignores
    # them, and the user is told so only when they gave one (defaults: POST_DEFAULTS).
    p.add_argument("--score", type=fraction, help="score threshold (default 0.3)")
    p.add_argument("--iou", type=fraction, help="NMS IoU threshold (default 0.5)")
    p.add_argument("--max-det", type=positive, default=100, help="detections per image (default 100)")
    p.add_argument("--nms", choices=["class", "global"], help="per-class (default) or class-agnostic NMS")
    p.add_argument("--soft-nms", action="store_true", help="Gaussian soft-NMS")
    p.add_argument("--labels", help="labels file, one name per line (overrides/supplies the model's)")
    p.add_argument("--image-size", type=positive, nargs="+", metavar="N", help="input size H [W] for a model without metadata")
    p.add_argument("--mean", type=float, nargs="+", help="normalisation mean (pixel units) for a model without metadata")
    p.add_argument("--std", type=float, nargs="+", help="normalisation std (pixel units) for a model without metadata")
    p.add_argument("--anchor-scale", type=float, help="anchor size in strides for a model without metadata (D0-D7: 4, Lite0-4: 3)")


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
    c.add_argument("--max-frames", type=positive, help="stop after N frames")
    c.add_argument("--sequential", action="store_true",
                   help="one frame at a time on one thread (default: the next frame is read and pre-processed during invoke)")
    c.set_defaults(func=run_camera_cmd)


POST_DEFAULTS = {"score": 0.3, "iou": 0.5, "nms": "class"}


def _detector(args):
    from edgedet.runtime.detector import Detector  # noqa: PLC0415

    size = args.image_size
    if size is not None:
        size = (size[0], size[0]) if len(size) == 1 else (size[0], size[1])
    post = {k: POST_DEFAULTS[k] if getattr(args, k) is None else getattr(args, k) for k in POST_DEFAULTS}
    det = Detector.from_file(
        args.model, device=args.device, threads=args.threads, fallback=args.fallback, labels=args.labels,
        image_size=size, mean=args.mean, std=args.std, anchor_scale=args.anchor_scale, score_threshold=post["score"],
        iou_threshold=post["iou"], max_detections=args.max_det, nms=post["nms"], soft=args.soft_nms,
    )
    given = [f for f, v in (("--image-size", size), ("--mean", args.mean), ("--std", args.std),
                            ("--anchor-scale", args.anchor_scale)) if v is not None]
    if given and det.own_metadata:
        print(f"edgedet: note: {', '.join(given)} ignored: {args.model} carries its own metadata", file=sys.stderr)
    note = _in_graph_nms_note(args, det.meta)
    if note:
        print(f"edgedet: note: {note}", file=sys.stderr)
    return det


def _in_graph_nms_note(args, meta) -> str | None:
    """What an --nms file's in-graph NMS makes of the post-processing options the user gave: the
    file's op already suppressed and thresholded, so they change nothing (and nothing said so)."""
    if meta.outputs != "nms":
        return None
    baked = meta.extra.get("nms") or {}
    floor = baked.get("score_threshold")
    below = args.score is not None and floor is not None and args.score < floor
    if not (below or args.iou is not None or args.nms is not None or args.soft_nms):
        return None
    how = []
    if floor is not None:
        how.append(f"score >= {floor:g}")
    if baked.get("iou_threshold") is not None:
        how.append(f"IoU {baked['iou_threshold']:g}")
    if "per_class" in baked:
        how.append("per class" if baked["per_class"] else "across classes")
    return (f"{args.model}: in-graph NMS{' (' + ', '.join(how) + ')' if how else ''}: --iou, --nms and --soft-nms "
            f"have no effect" + (f"; --score below {floor:g} changes nothing" if floor is not None else ""))


def _expand(inputs) -> list[tuple[str, str]]:
    """``[(kind, path)]`` with kind "image" or "video"; folders expand to their images (sorted)."""
    from edgedet.errors import DataError  # noqa: PLC0415
    from edgedet.runtime.frames import VIDEO_SUFFIXES  # noqa: PLC0415
    from edgedet.runtime.preprocess import is_image_file  # noqa: PLC0415

    out = []
    for path in inputs:
        if os.path.isdir(path):
            names = os.listdir(path)
            files = sorted(f for f in names if is_image_file(f))
            subs = [f for f in names if os.path.isdir(os.path.join(path, f))]
            if not files:
                raise DataError(f"{path}: no images in this folder" + (f" (its {len(subs)} sub-folders are not searched: "
                                                                     "give them as inputs)" if subs else ""))
            if subs:
                print(f"edgedet: note: {path}: {len(subs)} sub-folder{'s' if len(subs) != 1 else ''} not searched "
                      f"(give {'them' if len(subs) != 1 else 'it'} as inputs)", file=sys.stderr)
            out += [("image", os.path.join(path, f)) for f in files]
        elif path.lower().endswith(VIDEO_SUFFIXES):
            if not os.path.isfile(path):
                raise DataError(f"{path}: no such video file")
            out.append(("video", path))
        elif not os.path.exists(path):  # said before the model loads, not after
            raise DataError(f"{path}: no such {'image ' if is_image_file(path) else ''}file")
        else:
            out.append(("image", path))  # load_image reports non-image files
    return out


def _save_targets(save: str | None, items: list[tuple[str, str]]) -> list[str | None]:
    """Where each input's annotated copy goes, checked before any work: ``--save`` is one file
    (a video name for a video, an image name for an image) for one input, a folder otherwise."""
    from PIL import Image  # noqa: PLC0415

    from edgedet.errors import DataError  # noqa: PLC0415
    from edgedet.runtime.camera import SAVE_SUFFIXES, check_save_path  # noqa: PLC0415

    if not save:
        return [None] * len(items)
    suffix = os.path.splitext(save)[1].lower()
    if len(items) == 1 and suffix and not os.path.isdir(save):
        kind = items[0][0]
        if kind == "video":
            check_save_path(save)
        elif suffix not in Image.registered_extensions():
            raise DataError(f"{save}: not an image file name Pillow can write (.jpg, .png, ...)")
        return [save]
    if os.path.exists(save) and not os.path.isdir(save):
        raise DataError(f"{save}: is a file; --save takes a folder for {len(items)} inputs")
    names = [os.path.splitext(os.path.basename(p))[0] + (SAVE_SUFFIXES[0] if k == "video" else ".jpg") for k, p in items]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise DataError(f"{save}: several inputs would be saved as {clash[0]}; save them into separate folders")
    return [os.path.join(save, n) for n in names]


def _save_image(path: str, rgb) -> None:
    from PIL import Image  # noqa: PLC0415

    from edgedet.files import atomic_path

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp)


def run_detect(args: argparse.Namespace) -> int:
    from edgedet.errors import DataError  # noqa: PLC0415

    items = _expand(args.inputs)
    targets = _save_targets(args.save, items)
    if any(kind == "video" for kind, _ in items):
        from edgedet.runtime.camera import check_opencv  # noqa: PLC0415

        check_opencv()  # videos are read with OpenCV: say it is missing before loading the model
    det = _detector(args)
    info = det.describe()
    if not args.json:
        print(f"model {args.model}: {info['backend']} {info['version']} on {info['device']}"
              f"{' threads=' + str(info['threads']) if info['threads'] else ''}, input {det.input.size[0]}x{det.input.size[1]}, "
              f"{len(det.labels)} classes (loaded in {det.load_seconds * 1000:.0f} ms)")
    results, failed = [], 0
    for (kind, path), out in zip(items, targets):
        try:
            results.append(_detect_video(det, path, out, args) if kind == "video" else _detect_image(det, path, out, args))
        except DataError as exc:
            if len(items) == 1:
                raise
            # one unreadable file in a folder: say so and go on with the others
            failed += 1
            results.append({"image": path, "error": str(exc)})
            print(f"edgedet: warning: {exc}; skipped", file=sys.stderr)
    if args.json:
        json.dump({"model": args.model, "runtime": info, "results": results}, sys.stdout, indent=1)
        print()
    return 1 if failed else 0


def _detect_image(det, path: str, out: str | None, args) -> dict:
    """Detect in one image file (a large JPEG is decoded already reduced, as in the API)."""
    dets = det.detect(path)
    (h, w), t = det.last_image_hw, {k: round(v * 1000, 2) for k, v in det.last_timing.items()}
    if not args.json:
        print(f"{path}: {len(dets)} detections  (pre {t['pre']:.1f} ms, invoke {t['invoke']:.1f} ms, post {t['post']:.1f} ms)")
        for d in dets.to_list():
            x1, y1, x2, y2 = d["box"]
            print(f"  {d['label']:<16} {d['score']:.3f}  [{x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}]")
    if out:
        from edgedet.runtime.draw import draw_detections  # noqa: PLC0415
        from edgedet.runtime.preprocess import load_image  # noqa: PLC0415

        _save_image(out, draw_detections(load_image(path), dets))
        if not args.json:
            print(f"  saved {out}")
    return {"image": path, "width": int(w), "height": int(h), "timing_ms": t, "detections": dets.to_list()}


def _detect_video(det, path: str, out: str | None, args) -> dict:
    from edgedet.runtime.camera import run_camera  # noqa: PLC0415
    from edgedet.runtime.frames import FrameSource  # noqa: PLC0415

    stats = run_camera(det, FrameSource(path), headless=True, save=out)
    if not args.json:
        print(f"{path}: {stats['frames']} frames ({stats['dropped']} dropped), median invoke {stats['invoke_ms']} ms"
              + (f"; saved {stats['saved']}" if stats["saved"] else ""))
    if stats["stopped"] == "interrupt":
        raise KeyboardInterrupt  # the demo loop stops quietly on Ctrl-C; detect stops altogether
    return {"video": path, **stats}


def run_camera_cmd(args: argparse.Namespace) -> int:
    from edgedet.runtime.camera import check_opencv, run_camera  # noqa: PLC0415
    from edgedet.runtime.frames import FrameSource  # noqa: PLC0415

    if args.headless and not args.save:
        print("edgedet: note: --headless without --save shows and saves nothing; printing stats only", file=sys.stderr)
    if not args.sequential and args.threads is None and args.device is None:
        from edgedet.runtime.camera import pipeline_threads  # noqa: PLC0415

        args.threads = pipeline_threads()
    if args.save:
        from edgedet.runtime.camera import check_save_path  # noqa: PLC0415

        check_save_path(args.save)
    # The source (it opens nothing until the first frame) and OpenCV are checked before the model loads.
    source = FrameSource(args.source)
    check_opencv(args.source, args.headless, args.save)
    det = _detector(args)
    stats = run_camera(det, source, headless=args.headless, save=args.save, max_frames=args.max_frames,
                       sequential=args.sequential)
    print(f"camera: {stats['frames']} frames, {stats['dropped']} dropped, {stats['fps']} FPS ({stats['mode']}), "
          f"median inference {stats['invoke_ms']} ms, stopped by {stats['stopped']}" + (f"; saved {stats['saved']}" if stats["saved"] else ""))
    if not stats["frames"]:
        print(f"edgedet: error: {args.source}: no frame could be read" + ("; nothing saved" if args.save else ""), file=sys.stderr)
        return 1
    return 0
