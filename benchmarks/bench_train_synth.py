"""Benchmark: the tiny `test` EfficientDet on the built-in synthetic set, 5-minute budget.

Acceptance: AP50 >= 0.8 on the synthetic TEST split, training + evaluation within 5 minutes
of wall time on 2 CPU cores. Writes the dataset (cached) and a run folder, then prints one
JSON line with the figures and exits 1 if the target is missed.

    python benchmarks/bench_train_synth.py [--out /tmp/bench_train_synth] [--minutes 5]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/bench_train_synth")
    ap.add_argument("--minutes", type=float, default=5.0, help="total wall budget (training + evaluation)")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=40, help="upper bound; --time-limit shortens it")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=0.08)
    ap.add_argument("--num-images", type=int, default=800)
    ap.add_argument("--target", type=float, default=0.8)
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)

    from edgedet.train.synth import ensure_synth

    data = ensure_synth(os.path.join(args.out, "synth"), num_images=args.num_images, image_size=256)
    run = os.path.join(args.out, "run")
    shutil.rmtree(run, ignore_errors=True)

    t0 = time.time()
    from edgedet.train.evaluate_keras import run_eval
    from edgedet.train.trainer import TrainOptions, train

    # Everything before the first step (TF import, tracing) and the final test evaluation
    # come out of the same budget: leave them ~1 minute.
    opts = TrainOptions(data=str(data), out=run, model="test", image_size=args.image_size, epochs=args.epochs,
                        batch=args.batch, lr=args.lr, backbone_weights=None, jitter=(0.5, 1.5), eval_every=5,
                        time_limit=max(args.minutes - 1.0, 0.5), warmup_epochs=1.0, progress=args.progress)
    best = train(opts)
    t_train = time.time() - t0
    m = run_eval(run, split="test")
    wall = time.time() - t0
    result = {"bench": "train_synth", "model": "test", "image_size": args.image_size, "epochs_done":
              json.load(open(os.path.join(run, "run.json")))["epochs_done"], "train_s": round(t_train, 1),
              "wall_s": round(wall, 1), "test_AP50": round(m["AP50"], 4), "test_AP": round(m["AP"], 4),
              "best_val": best.get("metrics", {}).get("AP50"), "cpu_count": os.cpu_count(),
              "pass": bool(m["AP50"] >= args.target and wall <= args.minutes * 60)}
    print(json.dumps(result))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
