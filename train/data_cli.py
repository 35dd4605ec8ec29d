"""``edgedet data check|stats|synth``: inspect datasets and write the built-in synthetic one.

Import-light: numpy/Pillow load inside the handlers, TensorFlow never.
"""
from __future__ import annotations

import json
import os
import sys

from edgedet.argtypes import positive


def register(sub) -> None:
    p = sub.add_parser("data", help="check a dataset, show its statistics, or write the synthetic dataset",
                       description="Dataset tools: check (file-by-file problems), stats, synth.")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    c = dsub.add_parser("check", help="report bad boxes/images file by file (COCO, VOC or YOLO)",
                        description="Report degenerate/inverted/outside/duplicate boxes, size mismatches, "
                                    "unreadable or truncated images, unknown classes and empty images, and list the "
                                    "repairs made while reading (sizes filled from the image, labels differing only "
                                    "in case or spacing). The layout (VOC, YOLO, COCO as tools export them) is "
                                    "found from the folder.")
    c.add_argument("path", help="dataset folder (any layout in docs/datasets.md), COCO .json or YOLO data .yaml")
    pol = c.add_mutually_exclusive_group()
    pol.add_argument("--fix", dest="policy", action="store_const", const="fix",
                     help="repair what is safe: clip boxes, swap inverted corners, use the real image size")
    pol.add_argument("--strict", dest="policy", action="store_const", const="strict",
                     help="fail (exit 2) on any problem")
    c.set_defaults(policy="skip")
    _common(c)
    c.add_argument("--json", action="store_true", help="print a JSON report instead of text")
    c.add_argument("--no-decode", action="store_true", help="read image headers only (faster, misses truncated files)")
    c.set_defaults(func=_check)

    s = dsub.add_parser("stats", help="images, boxes and classes per split; --plot draws them with sample images",
                        description="Counts per class and split, COCO small/medium/large box sizes, and the "
                                    "warnings training would print (few boxes, a class missing from a split).")
    s.add_argument("path", help="dataset folder, COCO .json or YOLO data .yaml")
    _common(s)
    s.add_argument("--json", action="store_true", help="print JSON")
    s.add_argument("--plot", metavar="OUT.png", help="write a PNG: counts per class/split, box-size histogram, "
                                                     "sample images with their boxes")
    s.add_argument("--image-size", type=int, metavar="S",
                   help="model input side: also warn about images more than 4x smaller")
    s.set_defaults(func=_stats)

    y = dsub.add_parser("synth", help="write the deterministic synthetic detection dataset (COCO JSON + JPEGs)",
                        description="Shapes (circle, square, triangle, star, ring, cross) with textures and colours "
                                    "at many scales, with overlap and clutter on varied backgrounds.")
    y.add_argument("out", help="output folder (created)")
    y.add_argument("--num-images", type=positive, default=None, metavar="N",
                   help="total images, split 75/12.5/12.5 into train/val/test (default 800)")
    y.add_argument("--image-size", type=positive, default=256, metavar="S", help="square image side in px (default 256)")
    y.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same bytes")
    y.add_argument("--classes", default=None, metavar="A,B",
                   help="draw only these shapes (e.g. circle for a one-class set; default: all six)")
    y.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    y.add_argument("--workers", type=int, default=None, metavar="N",
                   help="generator processes (default: up to 4 CPUs); the output does not depend on it")
    y.set_defaults(func=_synth)


def _common(p) -> None:
    p.add_argument("--format", choices=("coco", "voc", "yolo"), default=None, help="skip format detection")
    p.add_argument("--classes", default=None,
                   help="class list: comma-separated names or a file with one per line (VOC defaults to the labels found)")


def _load(args):
    from edgedet.train.datasets import load_dataset

    ds = load_dataset(args.path, args.format, classes=args.classes)
    for note in ds.notes:
        print(f"note: {note}", file=sys.stderr)
    return ds


def _check(args) -> int:
    from edgedet.train.check import DataCheckError, check_dataset, summarize
    from edgedet.train.stats import dataset_stats

    from edgedet.errors import DataError

    try:
        ds = _load(args)
    except DataError as exc:
        if args.json:  # a script reading stdout gets the same document shape, with the error
            print(json.dumps({"path": str(args.path), "ok": False, "error": str(exc), "issues": []}, indent=2))
        raise
    try:
        clean, issues = check_dataset(ds, args.policy, decode=not args.no_decode, progress=sys.stderr.isatty())
        error = None
    except DataCheckError as exc:
        clean, issues, error = None, exc.issues, exc
    stats = dataset_stats(ds)
    if args.json:
        out = {"path": str(args.path), "format": ds.source_format, "layout": ds.layout, "policy": args.policy,
               "classes": ds.class_names, "issues": [i.to_dict() for i in issues],
               "ok": error is None, "error": str(error) if error else None, "notes": list(ds.notes), "stats": stats}
        if clean is not None:
            out["clean"] = {k: {"images": len(v), "boxes": sum(s.num_boxes for s in v)} for k, v in clean.splits.items()}
        print(json.dumps(out, indent=2))
    else:
        for i in issues:
            print(i)
        split_txt = ", ".join(f"{k} {v['images']}" for k, v in stats["splits"].items())
        nboxes = sum(v["boxes"] for v in stats["splits"].values())
        nimages = sum(v["images"] for v in stats["splits"].values())
        kept = ""
        if clean is not None:  # what training reads after the policy skipped or repaired
            ki, kb = sum(len(v) for v in clean.splits.values()), sum(s.num_boxes for v in clean.splits.values() for s in v)
            kept = f"; kept {ki} images, {kb} boxes" if (ki, kb) != (nimages, nboxes) else ""
        print(f"{args.path} ({ds.layout or ds.source_format}): {nimages} images ({split_txt}), {nboxes} boxes, "
              f"{len(ds.class_names)} classes; {summarize(issues)}{kept}; policy {args.policy}")
    if error is not None:
        raise error
    return 0


def _stats(args) -> int:
    from edgedet.train.stats import dataset_stats, plot_stats, training_warnings

    ds = _load(args)
    st = dataset_stats(ds)
    st["warnings"] = training_warnings(ds, args.image_size)
    if args.plot:
        st["plot"] = plot_stats(ds, args.plot)
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    print(f"{st['root']} ({st['layout'] or st['format']}), {len(st['classes'])} classes")
    for k, v in st["splits"].items():
        print(f"  {k:5s} {v['images']:6d} images {v['boxes']:7d} boxes ({v['empty_images']} without boxes)")
    width = max(len(n) for n in st["boxes_per_class"])
    for n, c in st["boxes_per_class"].items():
        print(f"  {n:{width}s} {c:7d} boxes")
    b = st["box_size_px"]
    print(f"  box size sqrt(w*h): min {b['min']:.1f}  median {b['median']:.1f}  max {b['max']:.1f} px")
    print("  box sizes (COCO areas): " + ", ".join(
        f"{k} " + "/".join(str(v) for v in b.values()) for k, b in st["box_size_coco"].items()) + " small/medium/large")
    print("  image sizes: " + ", ".join(f"{k} ({v})" for k, v in st["image_sizes"].items()))
    for w in st["warnings"]:
        print(f"warning: {w}")
    if args.plot:
        print(f"plot: {st['plot']}")
    return 0


def _synth(args) -> int:
    import time

    from edgedet.train.synth import DEFAULT_NUM_IMAGES, write_synth

    t = time.time()
    info = write_synth(args.out, num_images=args.num_images or DEFAULT_NUM_IMAGES, image_size=args.image_size,
                       seed=args.seed, overwrite=args.overwrite, progress=sys.stderr.isatty(),
                       workers=args.workers or min(4, os.cpu_count() or 1),
                       classes=tuple(c.strip() for c in args.classes.split(",") if c.strip()) if args.classes else None)
    counts = ", ".join(f"{k} {v['images']} images/{v['boxes']} boxes" for k, v in info["splits"].items())
    print(f"wrote {args.out}: {counts}; {len(info['classes'])} classes in {time.time() - t:.1f} s")
    return 0
