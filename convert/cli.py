"""``edgedet convert``: export a run (or an ONNX file) to deployment formats.

Import-light: TensorFlow, tf2onnx, OpenVINO and onnx2tf load inside the handler.
"""
from __future__ import annotations

import argparse
import sys

from edgedet.argtypes import positive
from edgedet.convert.registry import help_text, target_names


def register(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="export a trained run to TFLite / Edge TPU / ONNX / OpenVINO (with embedded metadata)",
        description="Export a training run (or an ONNX file) to one or more deployment targets. "
        "Artifacts are named <stem>_<target>.<ext> (OpenVINO: a folder) and carry labels, normalisation, "
        "anchors and quantization details inside the file.",
        epilog=help_text() + "\n\nexample:\n  edgedet convert --weights runs/bccd --target tflite-int8 --calib-data data/bccd",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", metavar="RUN", help="training run folder (float or QAT)")
    src.add_argument("--from", dest="from_onnx", metavar="MODEL.onnx", help="import an ONNX detector through onnx2tf")
    p.add_argument("--target", action="append", default=[], metavar="T",
                   help=f"export target, repeatable ({', '.join(target_names())})")
    p.add_argument("--device", metavar="PROFILE", help="device profile whose targets to export (edgedet devices)")
    p.add_argument("--calib-data", metavar="PATH", help="dataset / image folder / .txt list for post-training int8 calibration")
    p.add_argument("--calib-count", type=positive, default=300, metavar="N", help="calibration images, seeded sample (default 300)")
    p.add_argument("--io", choices=("uint8", "int8"), default="uint8", help="input/output type of full-integer TFLite (default uint8)")
    p.add_argument("--nms", action="store_true", help="TFLite: embed TFLite_Detection_PostProcess (4 standard outputs) instead of raw outputs")
    p.add_argument("--nms-score", type=float, metavar="P", help="--nms: score threshold baked into the model (default 0.05, low enough for mAP; every anchor above it enters the op's NMS, so a deployment threshold such as 0.3 runs faster: Lite0@320 int8 24 ms vs 38 ms)")
    p.add_argument("--nms-per-class", action="store_true",
                   help="--nms: suppress overlapping boxes per class, as the runtime does (the raw file's detections, "
                        "slower invoke); by default TFLite's quick mode keeps each box's best class and suppresses "
                        "across classes (docs/mobile.md)")
    p.add_argument("--max-drop", type=float, metavar="P",
                   help="tflite-int8 / openvino-int8: keep the fewest layers in float that hold the AP drop on --val-data within P points")
    p.add_argument("--val-data", metavar="DATA", help="--max-drop: dataset whose --val-split measures the AP drop")
    p.add_argument("--val-split", default="val", help="--max-drop: split to measure on (default val)")
    p.add_argument("--out", metavar="DIR", help="output folder (default RUN/export, or the ONNX file's folder)")
    p.set_defaults(func=run)


def _targets(args) -> list[str]:
    targets = list(args.target)
    if args.device:
        from edgedet.devices import load_profile

        prof = load_profile(args.device)
        listed = [t for t in prof.targets if t not in targets]
        from edgedet.runs import is_run_dir, read_run_json

        if args.weights and is_run_dir(args.weights):
            from edgedet.convert.registry import get_target
            from edgedet.errors import ConfigError

            if read_run_json(args.weights).get("kind") == "qat":  # a QAT run exports the profile's int8 targets only
                floats = [t for t in listed if get_target(t).needs != "calib|qat"]
                listed = [t for t in listed if t not in floats]
                if floats and not (listed or targets):
                    raise ConfigError(f"--device {prof.name} lists only float targets ({', '.join(floats)}); "
                                      f"a QAT run exports int8 ones: convert its float run (run.json source_run)")
                if floats:
                    print(f"[convert] note: --device {prof.name}: a QAT run exports its int8 targets "
                          f"({', '.join(listed)}); convert the float run for {', '.join(floats)}", file=sys.stderr)
        targets += listed
    return targets


def run(args: argparse.Namespace) -> int:
    import os
    import sys
    import time

    from edgedet.convert.api import convert, validate_command

    def log(msg: str) -> None:
        print(f"[convert] {msg}", file=sys.stderr, flush=True)

    if args.max_drop is not None and args.device:
        from edgedet.devices import load_profile
        from edgedet.quantize.budget import refuse_integer_only

        refuse_integer_only([], load_profile(args.device).delegate, args.device)
    start = time.perf_counter()
    arts, source = convert(
        _targets(args), weights=args.weights, from_onnx=args.from_onnx, calib_data=args.calib_data,
        calib_count=args.calib_count, nms=args.nms, out_dir=args.out, io_dtype=args.io, log=log,
        nms_score=args.nms_score, nms_per_class=args.nms_per_class, max_drop=args.max_drop, val_data=args.val_data,
        val_split=args.val_split,
    )
    log(f"{'done':<16} {time.perf_counter() - start:6.1f} s  {len(arts)} artifact(s)")
    from edgedet.runs import IN_PIPELINE_ENV

    if not os.environ.get(IN_PIPELINE_ENV):
        print(validate_command(arts, source, device=args.device))
    return 0
