"""``edgedet train`` and ``edgedet eval``. Import-light: TensorFlow loads inside the handlers."""
from __future__ import annotations

import json
import os
import sys

from edgedet.argtypes import positive


def register(sub) -> None:
    p = sub.add_parser("train", help="train an EfficientDet on a COCO/VOC/YOLO dataset",
                       description="Train (or --resume) a detector. Writes RUN/run.json, best/last weights, "
                                   "log.csv and TensorBoard logs in RUN/tb.")
    p.add_argument("--data", help="dataset folder / COCO json / YOLO yaml")
    p.add_argument("--model", default="lite0", help="variant (lite0..lite4, d0..d7; tiny, test, test-lite for quick checks) [lite0]")
    p.add_argument("--image-size", type=positive, default=None, help="square input side (default: the variant's)")
    p.add_argument("--epochs", type=positive, default=None, help="epochs [50]; with --resume: the new total")
    p.add_argument("--batch", type=positive, default=8, help="global batch size [8]")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate [0.08 * batch / 64]")
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--freeze-backbone", nargs="?", const="all", default=None, metavar="all|N",
                   help="freeze the whole backbone, or its stem + first N stages (small datasets, CPU)")
    p.add_argument("--backbone-weights", default="auto",
                   help="auto | imagenet | none | path to .h5/.pth [auto: imagenet where available offline, else random]")
    p.add_argument("--init", default=None, metavar="automl:PATH",
                   help="start from an official google/automl COCO checkpoint (folder, .tgz, or a name such as "
                   "efficientdet-lite0 to download); the variant comes from the checkpoint")
    from edgedet.train.distribute import add_arguments

    add_arguments(p)
    p.add_argument("--ema-decay", type=float, default=0.9998)
    p.add_argument("--jitter", default="0.1,2.0", help="scale-jitter range MIN,MAX [0.1,2.0]")
    p.add_argument("--no-flip", action="store_true", help="no horizontal flip augmentation")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--eval-every", type=int, default=1, help="evaluate on val every N epochs [1]")
    p.add_argument("--time-limit", type=float, default=None, metavar="MIN",
                   help="wall-clock budget in minutes: fewer epochs (shorter cosine schedule) if they would not fit")
    p.add_argument("--check", default="skip", choices=["skip", "fix", "strict"], help="dataset check policy [skip]")
    p.add_argument("--classes", default=None, help="class list (names, comma-separated, or a file)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", help="run folder to create")
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run (all options from RUN/run.json)")
    p.set_defaults(func=_train)

    e = sub.add_parser("eval", help="COCO mAP of a trained run (float Keras model) on a dataset split")
    e.add_argument("--weights", required=True, metavar="RUN", help="run folder from `edgedet train`")
    e.add_argument("--data", default=None, help="dataset (default: the run's own dataset)")
    e.add_argument("--split", default="test")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    e.add_argument("--soft-nms", action="store_true", help="Gaussian soft-NMS instead of hard NMS")
    e.add_argument("--iou", type=float, default=0.5, help="NMS IoU threshold [0.5]")
    e.add_argument("--score-threshold", type=float, default=0.001)
    e.add_argument("--max-detections", type=int, default=100)
    e.add_argument("--which", default="best", choices=["best", "last"])
    e.add_argument("--batch", type=positive, default=8)
    e.set_defaults(func=_eval)


def _parse_jitter(text: str) -> tuple[float, float]:
    from edgedet.errors import ConfigError

    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise ConfigError(f"--jitter {text!r}: expected MIN,MAX such as 0.1,2.0") from None
    if not 0 < lo <= hi:
        raise ConfigError(f"--jitter {text!r}: need 0 < MIN <= MAX")
    return lo, hi


def _absolute(value: str | None) -> str | None:
    """An existing path (or ``automl:PATH``) made absolute, so ``--resume`` works from any folder;
    anything else (a name, a comma list, ``auto``) as given."""
    if not value:
        return value
    head, path = ("automl:", value[len("automl:"):]) if value.startswith("automl:") else ("", value)
    return head + os.path.abspath(path) if os.path.exists(path) else value


def _train(args) -> int:
    from edgedet.errors import ConfigError
    from edgedet.extras import require
    from edgedet.train.distribute import apply_arguments

    require("tensorflow", "tf_keras", what="edgedet train")  # before --out is made
    apply_arguments(args)
    if args.resume:
        from edgedet.train.trainer import resume_epochs, resume_options, train

        opts = resume_options(args.resume)
        if args.no_progress:
            opts.progress = False
        if args.connect_timeout:
            opts.connect_timeout = args.connect_timeout
        best = train(opts, resume=True, epochs=resume_epochs(args.resume, args.epochs))
    else:
        if not args.data or not args.out:
            raise ConfigError("edgedet train needs --data PATH and --out RUN (or --resume RUN)")
        from edgedet.train.distribute import CONNECT_TIMEOUT_S
        from edgedet.train.trainer import TrainOptions, train

        opts = TrainOptions(
            data=_absolute(args.data), out=args.out, model=args.model, image_size=args.image_size, epochs=args.epochs or 50,
            batch=args.batch, lr=args.lr, warmup_epochs=args.warmup_epochs, freeze_backbone=args.freeze_backbone,
            backbone_weights=None if args.backbone_weights == "none" else args.backbone_weights,
            init=_absolute(args.init), strategy=args.strategy, mixed_precision=args.mixed_precision,
            connect_timeout=args.connect_timeout or CONNECT_TIMEOUT_S, seed=args.seed, ema_decay=args.ema_decay,
            jitter=_parse_jitter(args.jitter),
            flip=not args.no_flip, label_smoothing=args.label_smoothing, eval_every=args.eval_every,
            time_limit=args.time_limit,
            check_policy=args.check, classes=_absolute(args.classes), progress=not args.no_progress)
        if opts.epochs < 1 or opts.batch < 1:
            raise ConfigError("--epochs and --batch must be >= 1")
        best = train(opts)
    m = best.get("metrics") or {}
    if m:
        print(f"best epoch {best.get('epoch')}: val AP {m.get('AP', float('nan')):.4f} AP50 {m.get('AP50', float('nan')):.4f}")
    return 0


def _eval(args) -> int:
    from edgedet.train.evaluate_keras import run_eval

    result = run_eval(args.weights, data=args.data, split=args.split, soft_nms=args.soft_nms, iou=args.iou,
                      score_threshold=args.score_threshold, max_detections=args.max_detections, which=args.which,
                      batch=args.batch, progress=sys.stderr.isatty())
    if args.json:
        keep = {k: v for k, v in result.items() if k not in ("precision_iou50", "precision_mean", "recall_thresholds")}
        print(json.dumps(keep, indent=2))
    else:
        from edgedet.train.evaluate_keras import print_report

        print_report(result)
    return 0
