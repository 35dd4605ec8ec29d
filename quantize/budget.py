"""Accuracy-aware int8: keep the fewest layers in float that hold the AP drop within a budget.

``edgedet convert --target tflite-int8 --max-drop P --val-data DATA`` and ``edgedet quantize
diagnose`` use this module:

1. calibrate once (:func:`calibrate`): the converter's own calibrator records every tensor's
   range in a float model;
2. rank the tensors by int8 error (:func:`rank_layers`, TFLite's ``QuantizationDebugger`` on that
   calibrated model: RMSE / scale, worst first, the order ``quantize diagnose`` prints);
3. quantize with a denylist (:func:`quantize`): the calibrated model goes through the converter's
   MLIR quantizer again with ``denylisted_nodes``; the listed ops stay float, with QUANTIZE /
   DEQUANTIZE around them, and the model keeps the uint8 (or int8) input/output of the plain
   int8 export;
4. search (:func:`search`): measure the COCO AP of a candidate, bisect the ranked list for the
   shortest prefix within budget, then keep only the tensors of that prefix the budget needs,
   each found by bisection (:func:`_prune`).

Why the converter's denylist and not ai-edge-quantizer's selective recipes: with an empty
denylist, step 3 gives exactly the bytes ``keras_to_tflite(model, "int8")`` writes (the same
calibration, the same quantizer: tested), so the drop the search measures is the drop of the file
``convert`` would ship, and a mixed model differs from it only in the denylisted ops. A requantize
takes seconds, no second calibration is needed, and there is no new dependency. ai-edge-quantizer
would re-calibrate the float ``.tflite`` with its own range estimator and produce a model that is
not the baseline int8 file, so its AP drop would mix a second quantizer into the comparison.
"""
from __future__ import annotations

import itertools
import math
import sys
import time
from typing import Callable

from edgedet.errors import ConfigError

# Accelerators that run integer ops only: a float op cuts the graph and the rest runs on the CPU.
INTEGER_ONLY_TARGETS = ("edgetpu",)
INTEGER_ONLY_DELEGATES = ("edgetpu", "nnapi")
# Evaluations one search may spend (each: a requantize and a pass over the validation split,
# ~5 s for D0@384 on 87 images on 2 cores). Near the floor of what float layers can recover, AP
# moves by tenths with any change and almost every tensor looks needed; the cap keeps the whole
# command within about 15 minutes there, returning a set that meets the budget, not a minimal one.
MAX_EVALUATIONS = 120


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def refuse_integer_only(targets: list[str], delegate: str | None = None, profile: str | None = None) -> None:
    """One-line error when ``--max-drop`` meets a target that cannot hold float ops.

    Raises:
        ConfigError: an ``edgetpu`` target, or a full-integer (Edge TPU / NNAPI) device profile.
    """
    bad = [t for t in targets if t in INTEGER_ONLY_TARGETS]
    where = f"--target {bad[0]}" if bad else (f"--device {profile}" if delegate in INTEGER_ONLY_DELEGATES else "")
    if where:
        raise ConfigError(f"--max-drop keeps layers in float, which {where} cannot run (full-integer accelerator); "
                          f"use quantization-aware training instead: edgedet quantize qat --weights RUN --out RUN_QAT")


def calibrate(model, representative) -> tuple[bytes, list[str]]:
    """Calibrated float TFLite of ``model`` (every tensor's min/max recorded) and its output names.

    Args:
        model: tf_keras float model, input (1, S, S, 3) normalised float32.
        representative: iterable (or callable returning one) of (1, S, S, 3) float32 arrays.
    """
    from edgedet.convert.tflite_converter import make_converter, run_converter

    conv, names = make_converter(model, "int8", representative, io_dtype="float32")
    conv._experimental_calibrate_only = True  # the debugger's own route to the calibrated model
    return run_converter(conv), names


def quantize(calibrated: bytes, names: list[str], denylist=(), io_dtype: str = "uint8") -> bytes:
    """Quantize a calibrated model, keeping the ``denylist`` tensors' ops in float.

    Returns:
        TFLite bytes, input (1, S, S, 3) and outputs class_p3..box_p7 in ``io_dtype``; with an empty
        denylist identical to the plain int8 export.
    """
    import tensorflow as tf
    from tensorflow.lite.python import convert

    from edgedet.convert.tflite_converter import rename_outputs

    dtype = {"uint8": tf.uint8, "int8": tf.int8, "float32": tf.float32}[io_dtype]
    raw = convert.mlir_quantize(calibrated, input_data_type=dtype, output_data_type=dtype,
                                denylisted_nodes=list(denylist) or None)
    return rename_outputs(raw, names)


def rank_layers(calibrated: bytes, arrays, images: int = 32) -> list[dict]:
    """Per-tensor int8 error on ``images`` calibration arrays, worst first (``diagnose.layer_rows``)."""
    import tensorflow as tf
    from tensorflow.lite.python import convert

    from edgedet.convert.tflite_converter import signature_output_names
    from edgedet.quantize.diagnose import layer_rows

    debug_model = convert.mlir_quantize(calibrated, enable_numeric_verify=True)

    def debug_data():
        source = arrays() if callable(arrays) else arrays
        for x in itertools.islice(source, images):
            yield [x]

    dbg = tf.lite.experimental.QuantizationDebugger(quant_debug_model_content=debug_model, debug_dataset=debug_data)
    dbg.run()
    return layer_rows(dbg, signature_output_names(calibrated))


def search(score: Callable[[list[str]], float], ranked: list[str], float_ap: float, max_drop: float,
           log=_log, max_evaluations: int | None = None) -> dict:
    """The smallest float set (a prefix of ``ranked``, bisected, then pruned) within ``max_drop``.

    Args:
        score: AP (percent points, same scale as ``float_ap``) of the model with these tensors in float.
        ranked: candidate tensor names, most harmful first.
        float_ap, max_drop: the reference and the allowed drop, in AP points.
        max_evaluations: stop pruning after this many evaluations [``MAX_EVALUATIONS``].

    Returns:
        ``{"float_layers", "AP", "drop", "met", "minimal", "evaluations", "seconds", "log": [{"step",
        "float_layers", "AP", "drop", "met"}]}``; ``float_layers`` is 1-minimal (dropping any one breaks
        the budget) when ``met`` and ``minimal``; ``minimal`` is false when pruning stopped at
        ``max_evaluations`` (the set then meets the budget but may hold tensors it does not need);
        when even every candidate in float misses, the best measured set and ``met`` false.
    """
    start, cache, steps = time.perf_counter(), {}, []
    minimal = True  # until an evaluation is refused
    cap = MAX_EVALUATIONS if max_evaluations is None else max_evaluations

    def trial(subset: list[str], step: str) -> bool:
        nonlocal minimal
        key = frozenset(subset)
        if key not in cache and len(cache) >= cap:
            # Out of evaluations: "misses" without measuring. Pruning then keeps what it holds,
            # so the set it returns is the last one measured within budget.
            minimal = False
            return False
        if key not in cache:
            ap = float(score(list(subset)))
            cache[key] = ap
            drop = float_ap - ap
            steps.append({"step": step, "float_layers": len(subset), "AP": round(ap, 4), "drop": round(drop, 4),
                          "met": drop <= max_drop})
            log(f"  {step:<8} {len(subset):4d} float  AP {ap:7.3f}  drop {drop:+.3f}  {'ok' if drop <= max_drop else 'over'}")
        return float_ap - cache[key] <= max_drop

    chosen: list[str] = []
    if not trial([], "int8"):
        if not trial(ranked, "all"):
            best = max(cache, key=cache.get)
            chosen = [t for t in ranked if t in best]
        else:
            lo, hi = 0, len(ranked)  # prefix lo misses, prefix hi meets
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if trial(ranked[:mid], "bisect"):
                    hi = mid
                else:
                    lo = mid
            chosen = _one_minimal(_prune(ranked[:hi], trial), trial)
    ap = cache[frozenset(chosen)]
    if not minimal:
        log(f"  stopped pruning after {cap} evaluations: {len(chosen)} float tensors meet the budget, "
            "some may not be needed")
    return {"float_layers": chosen, "AP": round(ap, 4), "drop": round(float_ap - ap, 4),
            "met": float_ap - ap <= max_drop, "minimal": minimal, "evaluations": len(cache),
            "seconds": round(time.perf_counter() - start, 1), "log": steps}


def _one_minimal(chosen: list[str], trial) -> list[str]:
    """Take each kept tensor back to int8 in turn while the rest still meet the budget.

    AP is not monotone in the float set (a superset of a set within budget can miss), so what
    bisection calls needed is a good guess, not a fact: a 0.3-point budget kept two tensors where
    one alone met it at the same AP. One evaluation per kept tensor makes the set 1-minimal.
    """
    kept = list(chosen)
    for t in list(chosen):
        rest = [x for x in kept if x != t]
        if rest and trial(rest, "minimal"):  # the empty set was measured first, and missed
            kept = rest
    return kept


def _prune(chosen: list[str], trial) -> list[str]:
    """The needed tensors of a bisected prefix (ranked order); its last one is needed already
    (the prefix without it missed).

    The ranking is by tensor error, not by AP, so a tensor that carries the loss can sit deep in
    the list (on a D0@384, at rank 555 of 622), and pruning such a prefix one tensor at a time
    costs an evaluation per tensor. Instead, find the needed tensors one by one by bisection: the
    shortest prefix of the rest that, with those found so far, meets the budget ends in a needed
    tensor, and everything after it goes (about log2(n) evaluations per needed tensor). When the
    needed tensors turn out to be dense (after two found, their mean spacing is under log2 of
    what is left), test the rest one at a time instead, least harmful first. Either way each kept
    tensor was needed: without it, a superset of the final set missed.
    """
    needed, rest = [chosen[-1]], list(chosen[:-1])
    while rest:
        if trial(needed, "prune"):
            return _in_order(needed, chosen)
        lo, hi = 0, len(rest)  # needed + rest[:lo] misses, needed + rest[:hi] meets
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if trial(needed + rest[:mid], "prune"):
                hi = mid
            else:
                lo = mid
        needed.append(rest[hi - 1])
        rest = rest[:hi - 1]
        found, resolved = len(needed) - 1, len(chosen) - 1 - len(rest)
        if rest and found >= 2 and resolved / found < math.log2(len(rest) + 1):
            for t in reversed(list(rest)):
                without = [x for x in rest if x != t]
                if trial(needed + without, "prune"):
                    rest = without
            return _in_order(needed + rest, chosen)
    return _in_order(needed, chosen)


def _in_order(subset: list[str], ranked: list[str]) -> list[str]:
    keep = set(subset)
    return [t for t in ranked if t in keep]


def ap_points(tflite_bytes: bytes, meta, samples, class_names) -> float:
    """COCO AP@[.5:.95] in points (0..100) of TFLite bytes through the runtime Detector."""
    from edgedet.quantize.diagnose import tflite_ap

    return 100.0 * float(tflite_ap(tflite_bytes, meta, samples, class_names)["AP"])


def mixed_int8(model, arrays, evaluate: Callable[[bytes], float], float_ap: float, max_drop: float,
               io_dtype: str = "uint8", debug_images: int = 32, log=_log) -> tuple[bytes, dict]:
    """The int8 model of ``model`` with the fewest float layers whose AP is within ``max_drop`` of float.

    Args:
        model: tf_keras float model, input (1, S, S, 3) normalised float32.
        arrays: calibration arrays (1, S, S, 3) (or a callable returning them).
        evaluate: AP in points of TFLite bytes (the validation split, the runtime path).
        float_ap: the float model's AP in points on the same images.

    Returns:
        ``(tflite bytes, budget)``: ``budget`` is the metadata block (``float_layers``, ``drop``,
        ``met``, the search ``log``, ...; see :func:`search`).
    """
    from edgedet.quantize.diagnose import short_name

    start = time.perf_counter()
    calibrated, names = calibrate(model, arrays)
    rows = rank_layers(calibrated, arrays, debug_images)
    log(f"calibrated and ranked {len(rows)} tensors in {time.perf_counter() - start:.1f} s; "
        f"float AP {float_ap:.3f}, budget {max_drop} points")
    def score(deny: list[str]) -> float:
        return evaluate(quantize(calibrated, names, deny, io_dtype))

    found = search(score, [r["tensor"] for r in rows], float_ap, max_drop, log=log)
    by_tensor = {r["tensor"]: r for r in rows}
    deny = found["float_layers"]
    budget = {
        "max_drop": max_drop, "float_AP": round(float_ap, 4), "int8_AP": found["log"][0]["AP"],
        "AP": found["AP"], "drop": found["drop"], "met": found["met"], "minimal": found["minimal"],
        "float_layers": [short_name(t) if t not in by_tensor else by_tensor[t]["layer"] for t in deny],
        "float_tensors": deny, "candidates": len(rows), "evaluations": found["evaluations"],
        "search_seconds": found["seconds"], "seconds": round(time.perf_counter() - start, 1),
        "ranking": "QuantizationDebugger RMSE/scale, worst first", "log": found["log"],
    }
    # Requantized rather than kept from the search: holding every candidate (up to
    # MAX_EVALUATIONS files of up to fp32 size) would cost gigabytes for one requantize saved.
    return quantize(calibrated, names, deny, io_dtype), budget


def budget_tflite(ctx, representative) -> tuple[bytes, dict]:
    """``convert --max-drop``: the mixed int8 TFLite of the context's float source and its budget block."""
    from edgedet.convert.tflite_converter import keras_to_tflite
    from edgedet.errors import DataError
    from edgedet.quantize.diagnose import eval_samples

    src = ctx.source
    model, labels = src.model(), list(src.meta.labels)
    samples = eval_samples(ctx.val_data, ctx.val_split, None, labels)
    if not samples:
        raise DataError(f"{ctx.val_data}: no '{ctx.val_split}' images to measure the AP drop on (--val-data)")
    t = time.perf_counter()
    float_ap = ap_points(keras_to_tflite(model, "fp32"), src.meta_for("tflite-fp32"), samples, labels)
    qmeta = src.meta_for("tflite-int8")
    ctx.log(f"{'float AP':<16} {time.perf_counter() - t:6.1f} s  {float_ap:.3f} on {len(samples)} "
            f"'{ctx.val_split}' images of {ctx.val_data}")
    data, budget = mixed_int8(model, representative, lambda b: ap_points(b, qmeta, samples, labels), float_ap,
                              ctx.max_drop, io_dtype=ctx.io_dtype, log=ctx.log)
    budget.update({"data": str(ctx.val_data), "split": ctx.val_split, "images": len(samples)})
    ctx.log(f"{'budget':<16} {budget['seconds']:6.1f} s  {len(budget['float_layers'])} float layer(s), drop "
            f"{budget['drop']:+.3f} (int8 {float_ap - budget['int8_AP']:+.3f}), {budget['evaluations']} evaluations")
    if not budget["met"]:
        from edgedet.errors import ThresholdMissed

        raise ThresholdMissed(f"--max-drop {ctx.max_drop}: the best mixed model still drops {budget['drop']:.3f} AP "
                              f"({len(budget['float_layers'])} of {budget['candidates']} tensors in float; the "
                              f"{ctx.io_dtype} input and outputs stay quantized); raise the budget or use QAT")
    return data, budget
