"""``edgedet validate`` and ``edgedet bench`` (import-light: everything heavy loads in the handlers)."""
from __future__ import annotations

import os
import shlex
import sys

from edgedet.argtypes import at_least, positive
from edgedet.runtime.cli import FALLBACK_HELP

LATENCY_METRICS = ("end_to_end.p50", "end_to_end.p90", "end_to_end.p99", "invoke.p50", "invoke.p90", "invoke.p99")


def register(sub) -> None:
    p = sub.add_parser(
        "validate", help="accuracy drop and latency of exported models against the float baseline",
        description="Run the float baseline and every model through the same runtime and evaluator on the same "
                    "images; write report.md, report.json and report.html. Exits 1 when any model missed a "
                    "threshold or failed to run.",
    )
    p.add_argument("--baseline", metavar="RUN|FILE", help="training run folder (Keras float) or an fp32 model file")
    p.add_argument("--models", nargs="+", default=[], metavar="FILE", help=".tflite, .onnx, OpenVINO .xml or folder")
    p.add_argument("--data", required=True, metavar="PATH", help="dataset (COCO, VOC or YOLO)")
    p.add_argument("--split", default="test", help="split to evaluate on (default: test)")
    p.add_argument("--device", metavar="PROFILE", help="device profile: thresholds, delegate and threads")
    p.add_argument("--out", required=True, metavar="REPORT_DIR", help="folder for report.md/json/html")
    p.add_argument("--threads", type=positive, help="CPU threads for every model (overrides the profile)")
    p.add_argument("--fallback", choices=["cpu"], help=FALLBACK_HELP + "; the report says where each model ran")
    p.add_argument("--runs", type=at_least(0), default=0, metavar="N",
                   help="at least N timed calls per model (images are cycled); default: one per image")
    p.add_argument("--diagnosis", action="append", metavar="[MODEL=]PATH",
                   help="quantize diagnosis JSON to embed (for every int8 model, or MODEL=PATH); repeatable")
    p.add_argument("--max-ap-drop", type=float, metavar="FRAC",
                   help="allowed AP drop vs float as an AP fraction (0.01 = one point); overrides the profile")
    p.add_argument("--latency-budget", type=float, metavar="MS", help="latency budget in ms; overrides the profile")
    p.add_argument("--latency-metric", choices=LATENCY_METRICS, help="what the budget applies to (end_to_end.p50)")
    p.add_argument("--limit", type=positive, metavar="N", help="only the first N images of the split")
    p.add_argument("--timeout", type=float, metavar="S", help="seconds per model before it is stopped (❌)")
    p.add_argument("--data-plot", metavar="PNG", help="the dataset's `edgedet data stats --plot` picture, linked "
                   "from the report")
    p.add_argument("--no-html", action="store_true", help="skip report.html (no matplotlib needed)")
    p.set_defaults(func=_validate)

    b = sub.add_parser(
        "bench", help="latency of several models, interleaved, as a table",
        description="Latency only: models (and thread counts) are interleaved run by run so machine drift hits "
                    "them alike; reports medians and ratios against the first model.",
    )
    b.add_argument("--models", nargs="+", required=True, metavar="FILE")
    b.add_argument("--threads", nargs="+", type=positive, metavar="N", help="thread counts to compare (each model x each)")
    b.add_argument("--device", metavar="PROFILE", help="device profile (delegate/threads for its format)")
    b.add_argument("--fallback", choices=["cpu"], help=FALLBACK_HELP)
    b.add_argument("--runs", type=positive, default=50, metavar="N", help="timed runs per configuration (default 50)")
    b.add_argument("--warmup", type=at_least(0), default=3, metavar="N", help="untimed runs per configuration first")
    b.add_argument("--image", metavar="PATH", help="image to run on (default: a synthetic 640x480 frame)")
    b.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    b.set_defaults(func=_bench)

    r = sub.add_parser("report", help="merge validation reports from several devices into one view",
                       description="Work with the reports edgedet validate writes.")
    rsub = r.add_subparsers(dest="report_command", metavar="ACTION", required=True)
    m = rsub.add_parser(
        "merge", help="validation reports of the same files and images from several devices, side by side",
        description="Join report.json files (for example the workstation's and the device's) into one report: "
                    "each model's AP and ΔAP per device, latency per device, and what each device ran. Models "
                    "are matched by file sha256; reports of different files or datasets are refused.",
    )
    m.add_argument("reports", nargs="+", metavar="REPORT", help="report.json files or the folders holding them")
    m.add_argument("--out", required=True, metavar="DIR", help="folder for the merged report.md/json/html")
    m.add_argument("--names", nargs="+", metavar="NAME", help="device names, one per report (default: the "
                   "device profile or architecture)")
    m.set_defaults(func=_merge)


def _validate(args) -> int:
    from edgedet.runtime.report.md import md_table, summary_table
    from edgedet.runtime.report.validate import validate

    report = validate(
        args.models, args.data, args.out, baseline=args.baseline, split=args.split, device=args.device,
        threads=args.threads, fallback=args.fallback, runs=args.runs, diagnosis=args.diagnosis, max_ap_drop=args.max_ap_drop,
        latency_budget_ms=args.latency_budget, latency_metric=args.latency_metric, limit=args.limit,
        timeout=args.timeout, html=not args.no_html, progress=sys.stderr.isatty(),
        command="edgedet " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else None,
        data_plot=args.data_plot, log=lambda m: print(m, file=sys.stderr),
    )
    print(md_table(*summary_table(report)))
    for m in report["models"]:
        if m["status"] == "miss":
            print(f"❎ {m['name']}: {'; '.join(m['reasons'])}")
        elif m["status"] == "fail":
            print(f"❌ {m['name']}: {m['error']}")
    s = report["summary"]
    print(f"\n{s['passed']} passed, {s['missed']} missed, {s['failed']} failed -> {args.out}/report.{'md' if args.no_html else 'html'}")
    from edgedet.runtime.report.recommend import headline

    print(f"file to ship: {headline(report.get('recommendation'), md=False)}")
    return s["exit_code"]


def _bench(args) -> int:
    import json

    from edgedet.runtime.report.bench import bench, bench_footer, bench_table

    if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        from edgedet.errors import ConfigError

        raise ConfigError(f"--json {args.json}: its folder does not exist")
    rows = bench(args.models, threads=args.threads, device=args.device, runs=args.runs, warmup=args.warmup,
                 image=args.image, progress=sys.stderr.isatty(), fallback=args.fallback)
    print(bench_table(rows))
    print(bench_footer(args.runs, args.warmup, args.image))
    if args.json:
        from pathlib import Path

        from edgedet.files import atomic_write_text

        atomic_write_text(Path(args.json), json.dumps(rows, indent=1))
    return 1 if any(r["error"] for r in rows) else 0


def _merge(args) -> int:
    from edgedet.runtime.report.md import md_table
    from edgedet.runtime.report.merge import merge_reports, write_merged
    from edgedet.runtime.report.merge_render import accuracy_table

    merged = merge_reports(args.reports, names=args.names)
    paths = write_merged(merged, args.out)
    print(md_table(*accuracy_table(merged)))
    if merged["left_out"]:
        print(f"\nleft out (host-only Keras rows, no file a device runs): {', '.join(merged['left_out'])}")
    for w in merged["warnings"]:
        print(f"warning: {w}")
    print(f"\n{len(merged['models'])} models on {len(merged['devices'])} devices -> {paths['html']}")
    return 0
