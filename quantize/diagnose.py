"""Where does int8 lose accuracy? Float vs int8, tensor by tensor (``edgedet quantize diagnose``).

For a float run, the model is calibrated once (same seeded calibration set as ``ptq``) and
TFLite's ``QuantizationDebugger`` runs it with NumericVerify ops: for every quantized tensor
it compares the int8 value with the float op's output on the same (dequantized) inputs.
The figure of merit is ``rmse_over_scale`` = RMSE(int8 - float) / quantization scale: pure
rounding noise gives 1/sqrt(12) ~= 0.29; well above that means clipping or a badly chosen range.

Then:

* the ten worst tensors;
* mAP (the test split, the evaluator ``edgedet eval``/``validate`` use) of the float Keras model,
  the deployable full-integer model, and a *selective* model with the ten worst tensors
  denylisted (kept float: the calibrated model re-quantized without them, uint8 I/O like the
  deployable file, :mod:`edgedet.quantize.budget`), written to ``OUT/selective_int8.tflite`` with
  its float layers in the metadata — offered only for targets that can run float ops (not the
  Edge TPU, which runs integers only);
* the float ops left in the full-integer model (none expected).

For a QAT run, per-tensor errors need a float model with the same weights, which a QAT run does
not have: its diagnosis has the float ops, output-level cosines against the QAT Keras model
and the mAP of the QAT int8 model against the float source run.

Outputs: ``OUT/diagnosis.md`` and ``OUT/diagnosis.json``. JSON schema (version 1)::

    {"kind": "edgedet-quant-diagnosis", "version": 1, "run", "run_kind": "float"|"qat", "model",
     "target", "healthy_rmse_over_scale": 0.289,
     "float_AP", "int8_AP", "selective_AP" (null if not offered/evaluated), "ap_drop", "recovered_AP",
     "selective": {"offered": bool, "reason", "denylist": [tensor names], "path" (when written)},
     "float_ops": [{"index", "op", "outputs"}], "calibration": {...}, "ap_split", "ap_images",
     "layers": [10 worst rows], "all_layers": [every row, worst first],
     "outputs": {"class_p3": cosine, ...}}
    row = {"rank", "layer", "op", "rmse_over_scale", "rmse", "scale", "max_abs_error",
           "mean_error", "num_elements", "tensor"}   (layer: short name; tensor: full TFLite name)

``layers`` holds the rows the report stage embeds (``edgedet.runtime.validate_layers.load_diagnosis``).
"""
from __future__ import annotations

import json
import math
import os
import sys
import tempfile

from edgedet.errors import ConfigError

HEALTHY = 1.0 / math.sqrt(12.0)  # uniform rounding noise, in units of the scale
WORST = 10
INTEGER_ONLY_TARGETS = ("edgetpu",)
SELECTIVE_FILE = "selective_int8.tflite"
TARGETS = ("tflite", "xnnpack", "gpu", "nnapi", "openvino", "onnx", "edgetpu")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def selective_policy(target: str, is_qat: bool) -> dict:
    """Whether selective float fallback is offered: ``{"offered", "reason", "denylist": []}``.

    Not for integer-only targets (the Edge TPU would cut the graph at the first float op and
    run the rest on the CPU), and not for QAT runs (their float twin has different weights).
    """
    if target in INTEGER_ONLY_TARGETS:
        return {"offered": False, "reason": f"{target} runs integer ops only", "denylist": []}
    if is_qat:
        return {"offered": False, "reason": "QAT model: no float twin to fall back to", "denylist": []}
    return {"offered": True, "reason": "", "denylist": []}


def layer_rows(debugger, names: dict[str, str] | None = None) -> list[dict]:
    """Per-tensor statistics of a run ``QuantizationDebugger``, worst ``rmse_over_scale`` first.

    ``names`` maps tensor names to display names (the model outputs, which the converter calls
    ``StatefulPartitionedCall:N``, to ``class_p3`` ...).
    """
    import csv
    import io

    names = names or {}
    buf = io.StringIO()
    debugger.layer_statistics_dump(buf)
    buf.seek(0)
    rows = []
    for r in csv.DictReader(buf):
        scale = float(r["scale"])
        rmse = math.sqrt(max(float(r["mean_squared_error"]), 0.0))
        rows.append({"layer": names.get(r["tensor_name"]) or short_name(r["tensor_name"]), "op": r["op_name"],
                     "rmse_over_scale": round(rmse / scale, 4) if scale > 0 else None,
                     "rmse": rmse, "scale": scale, "max_abs_error": float(r["max_abs_error"]),
                     "mean_error": float(r["mean_error"]), "num_elements": int(float(r["num_elements"])),
                     "tensor": r["tensor_name"]})
    rows.sort(key=lambda r: -(r["rmse_over_scale"] if r["rmse_over_scale"] is not None else -1))
    return [{"rank": i + 1, **r} for i, r in enumerate(rows)]


def short_name(tensor: str) -> str:
    """Readable layer name of a TFLite tensor: the converter joins fused ops' names with ';'
    (``model/block3a_se_reduce/BiasAdd;model/block3a_se_reduce/Conv2D;...``); keep the first
    op's layer (``block3a_se_reduce``)."""
    import re

    first = tensor.split(";")[0]
    parts = first.split("/")
    if len(parts) <= 2:
        return first
    # A shared layer's later calls get op names like ``depthwise1``: keep the call index.
    call = re.search(r"(\d+)$", parts[-1])
    return f"{parts[1]}#{call.group(1)}" if call and len(parts) == 3 else parts[1]


def tflite_ap(tflite_bytes: bytes, meta, samples, class_names) -> dict:
    """COCO metrics of a TFLite model on ``samples`` through the runtime Detector (eval settings)."""
    from edgedet.runtime.detector import Detector
    from edgedet.runtime.report.evaluate import EVAL_POSTPROCESS, coco_evaluate
    from edgedet.runtime.metadata import embed_tflite

    with tempfile.TemporaryDirectory(prefix="edgedet-diag-") as tmp:
        path = os.path.join(tmp, "model.tflite")
        with open(path, "wb") as f:
            f.write(tflite_bytes)
        embed_tflite(path, meta)
        det = Detector.from_file(path, **EVAL_POSTPROCESS)
        dets = [det.detect(s.image_path) for s in samples]
    return coco_evaluate(samples, dets, class_names)


def eval_samples(data: str, split: str, limit: int | None, class_names):
    """The ``split`` samples of dataset ``data`` (at most ``limit``), classes in ``class_names``' order."""
    from edgedet.train.check import load_checked

    ds = load_checked(data, "skip", classes=list(class_names) or None)
    samples = list(ds.splits.get(split) or [])
    if limit:
        samples = samples[: int(limit)]
    return samples


def diagnose(run_dir: str, data: str, out_dir: str | None = None, target: str = "tflite", count: int = 300,
             seed: int = 0, batch: int = 8, debug_images: int = 32, split: str = "test", eval_limit: int | None = None,
             evaluate: bool = True, worst: int = WORST, log=_log) -> dict:
    """Diagnose int8 quantization of a run; writes ``diagnosis.md``/``diagnosis.json`` to ``out_dir``.

    Args:
        run_dir: float or QAT run. data: dataset (calibration: train split; mAP: ``split``).
        target: deployment target; selective float fallback is skipped for integer-only ones.
        count, seed, batch: calibration set (as ``edgedet quantize ptq``).
        debug_images: calibration images the debugger runs (per-tensor statistics).
        eval_limit: evaluate mAP on at most this many images; ``evaluate=False`` skips mAP.

    Returns:
        The diagnosis dict (see module docstring).
    """
    from edgedet.errors import did_you_mean

    if target not in TARGETS:
        raise ConfigError(f"--target {target!r}: unknown{did_you_mean(target, TARGETS)}; choose from {', '.join(TARGETS)}")
    from edgedet.quantize.ptq import heldout_arrays, make_calibration, output_cosines, run_model_config
    from edgedet.runs import read_run_json

    cfg = run_model_config(run_dir)
    cal = None
    if read_run_json(run_dir).get("kind", "float") != "qat":  # check the calibration set before loading TF
        cal = make_calibration(data, (cfg.image_size, cfg.image_size), cfg.mean, cfg.std, count=count, seed=seed,
                               batch=batch, log=log)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from edgedet.convert.source import load_run_source
    from edgedet.convert.tflite_converter import float_ops, keras_to_tflite
    from edgedet.files import atomic_write_bytes, atomic_write_json

    out_dir = out_dir or os.path.join(run_dir, "diagnosis")
    source = load_run_source(run_dir)
    model, meta = source.model(), source.meta
    class_names = list(meta.labels)
    result = {"kind": "edgedet-quant-diagnosis", "version": 1, "run": os.path.abspath(run_dir),
              "run_kind": source.kind, "model": meta.model, "target": target,
              "healthy_rmse_over_scale": round(HEALTHY, 3)}
    selective = selective_policy(target, source.is_qat)
    rows, sel_bytes = [], None
    if source.is_qat:
        int8 = keras_to_tflite(model, "int8")
    else:
        result["calibration"] = cal.describe()
        log(f"calibrating on {len(cal)} images, per-tensor statistics on {min(debug_images, len(cal))}")
        rows, sel_bytes, selective, int8 = _debug(model, cal, debug_images, worst, selective)
    result["float_ops"] = float_ops(int8)
    held = heldout_arrays(data, meta.input_size, meta.mean, meta.std)
    result["outputs"] = {k: round(v, 5) for k, v in output_cosines(model, int8, held, batch=batch).items()}
    result.update({"float_AP": None, "int8_AP": None, "selective_AP": None, "ap_drop": None, "recovered_AP": None})
    if evaluate:
        _evaluate(result, source, run_dir, data, split, eval_limit, class_names, int8, sel_bytes, meta, log)
    result["selective"] = selective
    result["layers"] = rows[:worst]
    result["all_layers"] = rows
    os.makedirs(out_dir, exist_ok=True)
    if sel_bytes is not None:  # the mixed model the selective AP was measured on, metadata included
        _write_selective(os.path.join(out_dir, SELECTIVE_FILE), sel_bytes, source, selective, rows, result)
        selective["path"] = os.path.join(out_dir, SELECTIVE_FILE)
    atomic_write_json(os.path.join(out_dir, "diagnosis.json"), result)
    atomic_write_bytes(os.path.join(out_dir, "diagnosis.md"), to_markdown(result).encode())
    log(f"wrote {os.path.join(out_dir, 'diagnosis.md')} and diagnosis.json")
    return result


def _debug(model, cal, debug_images: int, worst: int, selective: dict):
    """Calibrate once, rank the tensors; returns (rows, selective bytes or None, selective, int8 bytes).

    The selective model is the deployable one: uint8 input/output like the plain int8 export, the
    denylisted tensors' ops in float (:func:`edgedet.quantize.budget.quantize`), not the debugger's
    float-I/O model.
    """
    from edgedet.quantize.budget import calibrate, quantize, rank_layers

    calibrated, names = calibrate(model, cal.arrays)
    rows = rank_layers(calibrated, cal.arrays, debug_images)
    int8 = quantize(calibrated, names, (), "uint8")  # the bytes keras_to_tflite(model, "int8") gives
    sel_bytes = None
    if selective["offered"]:
        deny = [r["tensor"] for r in rows[:worst] if r["rmse_over_scale"] is not None and r["rmse_over_scale"] > HEALTHY]
        selective = dict(selective, denylist=deny)
        if deny:
            sel_bytes = quantize(calibrated, names, deny, "uint8")
        else:
            selective["reason"] = "no tensor above the healthy 0.29"
    return rows, sel_bytes, selective, int8


def _write_selective(path: str, data: bytes, source, selective: dict, rows: list[dict], result: dict) -> None:
    """Write the selective int8 model atomically with its metadata (float layers, measured AP)."""
    from edgedet.convert.tflite_export import io_quantization
    from edgedet.files import atomic_path
    from edgedet.runtime.metadata import embed_tflite

    meta = source.meta_for("tflite-int8")
    layer = {r["tensor"]: r["layer"] for r in rows}

    def points(key):  # the budget block is in AP points, the diagnosis in fractions
        return None if result.get(key) is None else round(100.0 * result[key], 3)

    meta.quantization = {"method": "ptq", "io_dtype": "uint8", **io_quantization(data),
                         "calibration": result.get("calibration"),
                         "budget": {"float_layers": [layer.get(t, t) for t in selective["denylist"]],
                                    "float_tensors": list(selective["denylist"]), "float_AP": points("float_AP"),
                                    "int8_AP": points("int8_AP"), "AP": points("selective_AP"),
                                    "ranking": "QuantizationDebugger RMSE/scale, worst first"}}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
        embed_tflite(tmp, meta)


def _evaluate(result, source, run_dir, data, split, eval_limit, class_names, int8, sel_bytes, meta, log):
    from edgedet.train.evaluate_keras import evaluate as keras_evaluate

    samples = eval_samples(data, split, eval_limit, class_names)
    if not samples:
        log(f"no {split} images in {data}: mAP not evaluated")
        return
    from edgedet.model.config import ModelConfig
    from edgedet.runs import load_run, read_run_json

    run = read_run_json(run_dir)
    cfg = ModelConfig.from_dict(run["model_config"])
    float_model = source.model()
    if source.is_qat:  # the float reference of a QAT run is its source run
        src = run.get("source_run")
        float_model = load_run(src)[0] if src and os.path.isdir(src) else None
    log(f"evaluating on {len(samples)} {split} images")
    if float_model is not None and cfg is not None:
        m = keras_evaluate(float_model, samples, class_names, image_size=cfg.image_size, mean=cfg.mean, std=cfg.std,
                           anchor_config=cfg.anchor_config)
        result["float_AP"] = round(float(m["AP"]), 4)
    qmeta = source.meta_for("tflite-int8")
    result["int8_AP"] = round(float(tflite_ap(int8, qmeta, samples, class_names)["AP"]), 4)
    if sel_bytes is not None:
        result["selective_AP"] = round(float(tflite_ap(sel_bytes, qmeta, samples, class_names)["AP"]), 4)
    result["ap_split"], result["ap_images"] = split, len(samples)
    if result["float_AP"] is not None:
        result["ap_drop"] = round(result["float_AP"] - result["int8_AP"], 4)
        if result["selective_AP"] is not None:
            result["recovered_AP"] = round(result["selective_AP"] - result["int8_AP"], 4)


def _fmt(v, digits=3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) >= 10 ** -digits or v == 0 else f"{v:.2e}"
    return str(v)


def to_markdown(d: dict) -> str:
    """The diagnosis as Markdown (a summary table, the worst tensors, float ops)."""
    lines = [f"# Quantization diagnosis: {d.get('model')} ({d.get('run_kind')} run)", ""]
    lines += ["| model | AP |", "|---|---|"]
    lines.append(f"| float (Keras) | {_fmt(d.get('float_AP'), 4)} |")
    lines.append(f"| int8 (full integer) | {_fmt(d.get('int8_AP'), 4)} |")
    sel = d.get("selective") or {}
    if sel.get("offered") and sel.get("denylist"):
        lines.append(f"| int8, {len(sel['denylist'])} worst tensors in float | {_fmt(d.get('selective_AP'), 4)} |")
    lines.append("")
    if d.get("ap_split"):
        lines.append(f"AP (0.5:0.95) on {d.get('ap_images')} `{d['ap_split']}` images; drop {_fmt(d.get('ap_drop'), 4)}"
                     + (f", selective float fallback recovers {_fmt(d.get('recovered_AP'), 4)}" if d.get("recovered_AP") is not None else "")
                     + ".")
    if not sel.get("offered"):
        lines.append(f"Selective float fallback not offered for target `{d.get('target')}`: {sel.get('reason')}.")
    lines.append("")
    if d.get("layers"):
        lines += [f"## The {len(d['layers'])} worst tensors (RMSE / scale; healthy ~ {d['healthy_rmse_over_scale']})", "",
                  "| # | layer | op | RMSE/scale | RMSE | scale | max abs err |", "|---|---|---|---|---|---|---|"]
        for r in d["layers"]:
            lines.append(f"| {r['rank']} | `{r['layer']}` | {r['op']} | {_fmt(r['rmse_over_scale'])} | {_fmt(r['rmse'], 4)} | "
                         f"{_fmt(r['scale'], 4)} | {_fmt(r['max_abs_error'], 4)} |")
        n_bad = sum(1 for r in d.get("all_layers", []) if (r["rmse_over_scale"] or 0) > 2 * HEALTHY)
        lines += ["", f"{len(d.get('all_layers', []))} tensors compared; {n_bad} above twice the healthy value.", ""]
    if d.get("outputs"):
        lines += ["## Outputs (cosine vs the Keras model on held-out images)", "", "| output | cosine |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in d["outputs"].items()] + [""]
    fo = d.get("float_ops") or []
    lines.append("## Float ops in the int8 model")
    lines.append("")
    lines.append("None: the model is full-integer." if not fo else
                 "\n".join(f"- {f['op']} -> `{', '.join(f['outputs'])}`" for f in fo))
    return "\n".join(lines) + "\n"


def load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)
