"""``edgedet info``: size figures of a model variant.

Import-light: the figures come from :mod:`edgedet.model.analytic` (pure Python, verified equal
to the built Keras graph by the tests); ``--build`` builds the tf_keras graph and counts from it.
"""
from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser(
        "info",
        help="parameters, MACs, input size and anchors of a model variant",
        description="Print parameters, MACs (1 MAC = 1 multiply-add of a conv/dense), input size, anchor "
        "count and BiFPN/head sizes of an EfficientDet variant. Without MODEL, list all variants.",
    )
    p.add_argument("model", nargs="?", metavar="MODEL", help="variant, e.g. d0, lite0 (omit to list all), or an "
                   "exported model file / run folder: what it carries (labels, input, normalisation, quantization, NMS)")
    p.add_argument("--num-classes", type=int, default=None, help="number of classes (default 90)")
    p.add_argument("--image-size", type=int, default=None, help="input size (multiple of 128, or 64 for Lite)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--build", action="store_true", help="build the tf_keras graph and count from it (slower)")
    p.set_defaults(func=run_info)

    imp = sub.add_parser("import", help="turn google/automl's official COCO checkpoints into a run folder",
                         description="Import a pretrained detector as an ordinary run folder (run.json + weights), "
                         "for eval, quantize, convert and fine-tuning.")
    kinds = imp.add_subparsers(dest="source", metavar="SOURCE", required=True)
    a = kinds.add_parser("automl", help="an official EfficientDet checkpoint (folder, .tgz/.tar.gz, or a name to "
                         "download such as efficientdet-lite0)",
                         description="Read an official google/automl EfficientDet checkpoint with TensorFlow's "
                         "checkpoint reader (EMA weights, as automl evaluates) into a run folder.")
    a.add_argument("path", metavar="PATH", help="extracted checkpoint folder, its .tgz/.tar.gz, or efficientdet-d0..d7 "
                   "/ efficientdet-lite0..lite4 (downloaded from Google's address into ~/.cache/edgedet)")
    a.add_argument("--out", required=True, metavar="RUN", help="run folder to create")
    a.add_argument("--classes", default=None, help="class names, comma-separated (default: the 90 COCO classes; "
                   "another count keeps every layer but the class predictor)")
    a.add_argument("--image-size", type=int, default=None, help="input size (default: the variant's)")
    a.set_defaults(func=run_import)


def info_dict(name: str, num_classes: int | None = None, image_size: int | None = None, build: bool = False) -> dict:
    """The figures ``edgedet info`` prints, as a dict."""
    from edgedet.model.analytic import count
    from edgedet.model.config import get_config
    from edgedet.runtime.anchors import feature_sizes

    cfg = get_config(name, num_classes=num_classes, image_size=image_size)
    levels = feature_sizes((cfg.image_size, cfg.image_size))
    anchors = sum(h * w for h, w in levels) * cfg.num_anchors
    if build:
        import os

        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
        from edgedet.model.efficientdet import model_stats

        s = model_stats(cfg)
        total, trainable, macs, source = s["params"], s["trainable_params"], s["macs"], "graph"
    else:
        c = count(cfg)
        total, trainable, macs, source = c.params, c.trainable, c.macs, "analytic"
    return {
        "name": cfg.name,
        "backbone": cfg.backbone,
        "image_size": cfg.image_size,
        "num_classes": cfg.num_classes,
        "params": total,
        "trainable_params": trainable,
        "non_trainable_params": total - trainable,
        "macs": macs,
        "anchors": anchors,
        "anchors_per_position": cfg.num_anchors,
        "anchor_scale": cfg.anchor_scale,
        "feature_sizes": [list(s) for s in levels],
        "fpn_width": cfg.fpn_width,
        "fpn_layers": cfg.fpn_layers,
        "head_layers": cfg.head_layers,
        "activation": cfg.activation,
        "fusion": cfg.fusion,
        "mean": list(cfg.mean),
        "std": list(cfg.std),
        "counted_from": source,
    }


def _m(n: int) -> str:
    return f"{n / 1e6:.2f}M"


def run_info(args) -> int:
    import os

    from edgedet.model.config import variant_names

    if args.model is not None and os.path.exists(args.model):
        return file_info(args.model, args.json)
    if args.model is None:
        if args.image_size is not None:
            from edgedet.errors import ConfigError

            raise ConfigError("--image-size needs a MODEL (each variant has its own sizes); e.g. edgedet info lite0 --image-size 320")
        rows = [info_dict(n, args.num_classes) for n in variant_names()]
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        print(f"{'model':10} {'input':>5} {'params':>8} {'trainable':>9} {'MACs':>8} {'anchors':>8}  "
              f"{'fpn':>8}  {'head':>4}  act/fusion")
        for d in rows:
            print(f"{d['name']:10} {d['image_size']:5d} {_m(d['params']):>8} {_m(d['trainable_params']):>9} "
                  f"{d['macs'] / 1e9:7.2f}B {d['anchors']:8d}  {d['fpn_width']:3d}x{d['fpn_layers']:<4d}  "
                  f"{d['head_layers']:4d}  {d['activation']}/{d['fusion']}")
        return 0
    d = info_dict(args.model, args.num_classes, args.image_size, build=args.build)
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    print(f"model:       efficientdet-{d['name']} (backbone {d['backbone']}, {d['activation']}, {d['fusion']} fusion)")
    mean, std = ", ".join(f"{v:g}" for v in d["mean"]), ", ".join(f"{v:g}" for v in d["std"])
    print(f"input:       {d['image_size']}x{d['image_size']}x3, normalised (pixel - [{mean}]) / [{std}] per RGB channel")
    print(f"classes:     {d['num_classes']}")
    print(f"params:      {d['params']:,} ({_m(d['params'])}; trainable {d['trainable_params']:,} = "
          f"{_m(d['trainable_params'])}, the figure papers quote)")
    how = "the built tf_keras graph" if d["counted_from"] == "keras" else "the layer formulas"
    print(f"MACs:        {d['macs']:,} ({d['macs'] / 1e9:.2f} B multiply-adds, counted from {how})")
    print(f"anchors:     {d['anchors']:,} ({d['anchors_per_position']} per position, scale {d['anchor_scale']}, "
          f"levels P3-P7 {' '.join(f'{h}x{w}' for h, w in d['feature_sizes'])})")
    print(f"BiFPN:       {d['fpn_layers']} layers x {d['fpn_width']} channels")
    print(f"heads:       {d['head_layers']} separable convs (class + box, shared over P3-P7)")
    return 0


def file_info(path: str, as_json: bool) -> int:
    """What an exported model file (its metadata) or a run folder (its run.json) says about itself."""
    from edgedet.errors import ModelFileError

    from edgedet.runs import is_run_dir, read_run_json

    if is_run_dir(path):
        run = read_run_json(path)
        facts = {"run": path, "kind": run.get("kind"), "model": run.get("variant"), "input": run.get("image_size"),
                 "classes": run.get("class_names"), "dataset": run.get("dataset"),
                 "best val": (run.get("best") or {}).get("metrics"), "status": run.get("status")}
    else:
        from edgedet.runtime.metadata import read_metadata

        meta = read_metadata(path)
        if meta is None:
            raise ModelFileError(f"{path}: carries no edgedet metadata (not exported by edgedet convert)")
        facts = {"file": path, "model": meta.model, "target": meta.target, "input": list(meta.input_size),
                 "classes": meta.labels, "normalisation": f"(pixel - {list(meta.mean)}) / {list(meta.std)}",
                 "resize": meta.resize, "outputs": meta.outputs, "nms": meta.extra.get("nms"),
                 "quantization": meta.quantization if as_json else _quantization_line(meta.quantization),
                 "float baseline": meta.baseline,
                 "macs": meta.macs}
    if as_json:
        print(json.dumps(facts, indent=2, default=str))
        return 0
    for k, v in facts.items():
        if isinstance(v, dict) and "AP" in v:  # metrics: the headline three, in AP points
            v = ", ".join(f"{m} {100 * v[m]:.2f}" for m in ("AP", "AP50", "AP75") if v.get(m) is not None)
        if v not in (None, "", [], {}):
            print(f"{k + ':':16}{', '.join(map(str, v)) if isinstance(v, list) else v}")
    return 0


def _quantization_line(q: dict) -> str:
    """``ptq, uint8 in/out; 1 layer float (block2b_activation#6) for an AP drop of 0.06 within 0.5``."""
    parts = [q.get("method") or "none"]
    if q.get("io_dtype"):
        parts.append(f"{q['io_dtype']} in/out")
    b = q.get("budget") or {}
    line = ", ".join(parts)
    if b.get("float_layers") is not None:
        n = len(b["float_layers"])
        line += (f"; {n} layer{'s' if n != 1 else ''} float ({', '.join(b['float_layers'][:4])}"
                 f"{', ...' if n > 4 else ''}) for an AP drop of {b.get('drop')} within {b.get('max_drop')} "
                 f"(convert --max-drop; the search log: --json)")
    elif b.get("drop") is not None:  # NNCF's accuracy control: its reverted ops are in its log only
        line += f"; AP drop {b['drop']} within {b.get('max_drop')} (convert --max-drop, {b.get('tool', '')})"
    return line


def run_import(args) -> int:
    import os
    import sys

    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from edgedet.model.automl_import import import_run

    names = [c.strip() for c in args.classes.split(",")] if args.classes is not None else None
    if names is not None and (not all(names) or len(set(names)) != len(names)):
        from edgedet.errors import ConfigError

        raise ConfigError(f"--classes {args.classes!r}: give distinct, non-empty names, comma-separated")
    data = import_run(args.path, args.out, class_names=names, image_size=args.image_size,
                      log=lambda m: print(m, file=sys.stderr, flush=True))
    src = data["imported"]
    print(f"imported efficientdet-{data['variant']} ({src['variables']} variables, "
          f"{'EMA' if src['ema'] else 'raw'} weights, {data['num_classes']} classes, {data['image_size']} px) "
          f"-> {args.out}")
    return 0
