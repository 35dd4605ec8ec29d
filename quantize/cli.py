"""``edgedet quantize {qat,ptq,diagnose,choose}``. Import-light: TensorFlow loads inside the handlers."""
from __future__ import annotations

import argparse
import os
import sys

from edgedet.argtypes import positive

_RAW = argparse.RawDescriptionHelpFormatter


def register(sub) -> None:
    q = sub.add_parser("quantize", help="int8 quantization: QAT fine-tuning, post-training int8/fp16/dynamic, diagnosis",
                       description="Quantization-aware training, post-training quantization and a per-layer diagnosis.")
    qs = q.add_subparsers(dest="quantize_command", metavar="{qat,ptq,diagnose,choose}")
    q.set_defaults(func=lambda args: (q.print_help(), 2)[1])
    _add_qat(qs)
    _add_ptq(qs)
    _add_diagnose(qs)
    _add_choose(qs)


def _add_qat(qs) -> None:
    """``quantize qat``: quantization-aware fine-tuning of a float run."""
    p = qs.add_parser("qat", formatter_class=_RAW, help="fine-tune a float run with quantization-aware training",
                      description="Fine-tune a float run (edgedet train) with fake-quant (tfmot), short low-LR schedule. "
                                  "Writes a new run folder (kind qat) that `edgedet convert` turns into a full-integer "
                                  "TFLite without calibration data.",
                      epilog="example:\n  edgedet quantize qat --weights runs/bccd --data data/bccd --out runs/bccd_qat")
    p.add_argument("--weights", metavar="RUN", help="float run folder to start from")
    p.add_argument("--data", default=None, help="dataset (default: the run's own)")
    p.add_argument("--out", metavar="RUN_QAT", help="QAT run folder to create")
    p.add_argument("--epochs", type=positive, default=None, help="fine-tuning epochs [5]; with --resume: the new total")
    p.add_argument("--batch", type=positive, default=None, help="batch size [the float run's]")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate [the float run's / 10]")
    p.add_argument("--train-bn", action="store_true",
                   help="update BatchNorm statistics (default: frozen, the statistics the converter folds)")
    p.add_argument("--freeze-backbone", nargs="?", const="all", default=None, metavar="all|N",
                   help="freeze the backbone weights (its fake-quant ranges still adapt) [the float run's; 0: none]")
    p.add_argument("--time-limit", type=float, default=None, metavar="MIN", help="wall-clock budget in minutes")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--resume", metavar="RUN_QAT", help="continue an interrupted QAT run")
    from edgedet.train.distribute import add_arguments

    add_arguments(p)  # QAT keeps float32 under --mixed-precision (with a note)
    p.set_defaults(func=_qat)


def _add_ptq(qs) -> None:
    """``quantize ptq``: calibrated int8, fp16 and dynamic-range TFLite."""
    t = qs.add_parser("ptq", formatter_class=_RAW, help="post-training quantization to int8 (calibrated), fp16 and dynamic-range TFLite",
                      description="Calibrate a full-integer TFLite on a seeded sample of the dataset's train split "
                                  "(runtime pre-processing), and write fp16 / dynamic-range variants.",
                      epilog="example:\n  edgedet quantize ptq --weights runs/bccd --data data/bccd --out runs/bccd/ptq")
    t.add_argument("--weights", required=True, metavar="RUN", help="float run folder")
    t.add_argument("--data", required=True, help="calibration data: dataset (train split), image folder or .txt list")
    t.add_argument("--out", default=None, help="output folder [RUN/ptq]")
    t.add_argument("--modes", default="int8,fp16,dynamic", help="comma-separated: int8, fp16, dynamic [all]")
    t.add_argument("--calib-count", type=positive, default=300, metavar="N", help="calibration images [300]")
    t.add_argument("--seed", type=int, default=0, help="calibration sampling seed [0]")
    t.add_argument("--batch", type=positive, default=8, help="calibration batch; a smaller calibration set is an error [8]")
    t.add_argument("--io", default="uint8", choices=["uint8", "int8"], help="int8 model input/output type [uint8]")
    t.set_defaults(func=_ptq)


def _add_diagnose(qs) -> None:
    """``quantize diagnose``: float vs int8 tensor by tensor."""
    d = qs.add_parser("diagnose", formatter_class=_RAW, help="float vs int8 layer by layer, worst tensors, selective float fallback",
                      description="Per-tensor RMSE/scale (TFLite QuantizationDebugger; ~0.29 is healthy), the ten worst "
                                  "tensors, and whether keeping them float recovers the mAP. Writes diagnosis.md/json.",
                      epilog="example:\n  edgedet quantize diagnose --weights runs/bccd --data data/bccd")
    d.add_argument("--weights", required=True, metavar="RUN", help="float (or QAT) run folder")
    d.add_argument("--data", required=True, help="dataset: train split calibrates, --split is evaluated")
    d.add_argument("--out", default=None, help="output folder [RUN/diagnosis]")
    d.add_argument("--target", default="tflite",
                   help="deployment target; selective float fallback is not offered for edgetpu [tflite]")
    d.add_argument("--calib-count", type=positive, default=300, metavar="N")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--batch", type=positive, default=8)
    d.add_argument("--debug-images", type=positive, default=32, help="images for per-tensor statistics [32]")
    d.add_argument("--split", default="test", choices=("train", "val", "test"), help="split the mAP is measured on [test]")
    d.add_argument("--eval-limit", type=positive, default=None, metavar="N", help="evaluate on at most N images")
    d.add_argument("--no-eval", action="store_true", help="skip the mAP evaluation (per-tensor table only)")
    d.add_argument("--json", action="store_true", help="print the diagnosis JSON")
    d.set_defaults(func=_diagnose)


def _add_choose(qs) -> None:
    """``quantize choose``: ship the QAT or the PTQ export, whichever scores higher."""
    c = qs.add_parser("choose", help="ship the better int8 export: QAT or PTQ, by AP on the validation split",
                      description="Evaluate QAT_DIR/NAME and PTQ_DIR/NAME on --split of --data and copy the one with "
                                  "the higher AP to OUT/NAME (ties: QAT); writes OUT/choice.json saying which and why.")
    c.add_argument("--qat", required=True, metavar="QAT_DIR", help="folder of the QAT run's int8 exports")
    c.add_argument("--ptq", required=True, metavar="PTQ_DIR", help="folder of the float run's PTQ int8 exports")
    c.add_argument("--names", required=True, help="comma-separated file (or OpenVINO folder) names to compare")
    c.add_argument("--data", required=True, help="dataset")
    c.add_argument("--split", default="val", choices=("train", "val", "test"), help="split to compare on [val]")
    c.add_argument("--out", required=True, help="folder for the shipped models and choice.json")
    c.set_defaults(func=_choose)


def _setup_env() -> None:
    import os

    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _qat(args) -> int:
    from edgedet.errors import ConfigError
    from edgedet.extras import require

    require("tensorflow", "tf_keras", "tensorflow_model_optimization", what="edgedet quantize qat")  # before --out is made
    _setup_env()
    from edgedet.quantize.qat import qat, resume_qat
    from edgedet.train.distribute import apply_arguments

    apply_arguments(args)
    if args.resume:
        fixed = [flag for flag, value in (("--weights", args.weights), ("--out", args.out), ("--data", args.data),
                                          ("--batch", args.batch), ("--lr", args.lr), ("--train-bn", args.train_bn),
                                          ("--freeze-backbone", args.freeze_backbone), ("--time-limit", args.time_limit),
                                          ("--seed", args.seed)) if value not in (None, False)]
        if fixed:
            raise ConfigError(f"--resume {args.resume} continues the run with its own options; {', '.join(fixed)} "
                              "cannot change them (--epochs can set a new total)")
        best = resume_qat(args.resume, progress=not args.no_progress, connect_timeout=args.connect_timeout,
                          epochs=args.epochs)
    else:
        if not args.weights or not args.out:
            raise ConfigError("edgedet quantize qat needs --weights RUN and --out RUN_QAT (or --resume RUN_QAT)")
        best = qat(args.weights, args.out, data=args.data, epochs=args.epochs, batch=args.batch, lr=args.lr,
                   train_bn=args.train_bn, freeze_backbone=args.freeze_backbone, time_limit=args.time_limit,
                   seed=args.seed, progress=not args.no_progress, strategy=args.strategy,
                   connect_timeout=args.connect_timeout, mixed_precision=args.mixed_precision)
    m = (best or {}).get("metrics") or {}
    if m:
        print(f"best epoch {best.get('epoch')}: val AP {m.get('AP', float('nan')):.4f} (QAT Keras model)")
    from edgedet.runs import IN_PIPELINE_ENV

    if not os.environ.get(IN_PIPELINE_ENV):  # the pipeline runs convert itself
        print(f"next: edgedet convert --weights {args.resume or args.out} --target tflite-int8")
    return 0


def _ptq(args) -> int:
    _setup_env()
    from edgedet.quantize.ptq import ptq

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    rep = ptq(args.weights, args.data, args.out, modes=modes, count=args.calib_count, seed=args.seed,
              batch=args.batch, io_dtype=args.io)
    for mode, a in rep["artifacts"].items():
        print(f"{mode:<8} {a['bytes'] / 1e6:7.2f} MB  {a['path']}")
    return 0


def _diagnose(args) -> int:
    _setup_env()
    from edgedet.quantize.diagnose import diagnose

    d = diagnose(args.weights, args.data, args.out, target=args.target, count=args.calib_count, seed=args.seed,
                 batch=args.batch, debug_images=args.debug_images, split=args.split, eval_limit=args.eval_limit,
                 evaluate=not args.no_eval)
    if args.json:
        import json

        print(json.dumps({k: v for k, v in d.items() if k != "all_layers"}, indent=2))
    else:
        from edgedet.quantize.diagnose import to_markdown

        sys.stdout.write(to_markdown(d))
    return 0


def _choose(args) -> int:
    _setup_env()
    from edgedet.quantize.guard import choose

    names = [n.strip() for n in args.names.split(",") if n.strip()]
    choose(args.qat, args.ptq, names, args.data, args.out, split=args.split)
    return 0
