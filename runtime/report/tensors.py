"""Tensor-by-tensor error of an int8 TFLite model against the fp32 TFLite export of the same weights.

LiteRT can keep every intermediate tensor (``experimental_preserve_all_tensors``), and the
converter names op outputs after the Keras layers, identically in the fp32 and int8 files. So the
two files can be compared tensor by tensor with LiteRT alone (no TensorFlow): each model gets the
same image through its own pre-processing, and every shared op output is compared after
dequantisation.

Unlike ``edgedet quantize diagnose`` (which feeds every int8 op the float inputs, isolating its own
error), errors here compound from the input on, like on the device. The tell-tale of a broken
range (calibration on unrepresentative images, a clipped activation) is ``rmse_over_scale`` far
above 0.29 — pure rounding — from the tensor where the range went wrong onwards.
"""
from __future__ import annotations

import os

import numpy as np

COLUMNS = ["index", "tensor", "op", "rmse_over_scale", "rel_rmse", "cosine", "scale"]
BROKEN_RANGE = 2.0  # rmse/scale above this: not rounding noise any more


def _interpreter(path: str):
    import warnings

    from edgedet.runtime.backends.litert import _interpreter_module

    interpreter_cls = _interpreter_module()[0]
    with warnings.catch_warnings():  # "intended for debugging": that is what this is
        warnings.simplefilter("ignore")
        it = interpreter_cls(model_path=path, experimental_preserve_all_tensors=True, num_threads=1)
    it.allocate_tensors()
    return it


def _op_outputs(it) -> list[tuple[str, str, int, tuple | None]]:
    """``[(tensor name, op name, tensor index, (scale, zero_point) or None)]`` in execution order."""
    details = {d["index"]: d for d in it.get_tensor_details()}
    seen, out = set(), []
    for op in it._get_ops_details():  # noqa: SLF001 - the public API has no op list
        for idx in op.get("outputs", []):
            d = details.get(int(idx))
            if d is None or d["name"] in seen:
                continue
            seen.add(d["name"])
            q = d.get("quantization") or (0.0, 0)
            out.append((d["name"], op.get("op_name", ""), int(idx), (float(q[0]), int(q[1])) if q[0] else None))
    return out


def _run(it, plan, meta, image) -> None:
    from edgedet.runtime.detector import prepare_image

    it.set_tensor(it.get_input_details()[0]["index"], prepare_image(image, plan, meta)[0])
    it.invoke()


def _input_plan(path: str, it):
    """``(InputPlan, meta)`` for this interpreter's own input (the file as stored, uint8 kept)."""
    from edgedet.errors import ModelFileError
    from edgedet.runtime.backends.litert import _spec
    from edgedet.runtime.metadata import read_metadata
    from edgedet.runtime.outputs import InputPlan

    meta = read_metadata(path)
    if meta is None:
        raise ModelFileError(f"{path}: no edgedet metadata; the tensor comparison needs it")
    return InputPlan(_spec(it.get_input_details()[0]), meta), meta


def _value(it, idx: int, quant) -> np.ndarray | None:
    try:
        a = it.get_tensor(idx)
    except ValueError:  # tensors the runtime freed or never materialised
        return None
    if quant is not None and np.issubdtype(a.dtype, np.integer):
        return (a.astype(np.float32) - quant[1]) * quant[0]
    return a.astype(np.float32) if a.dtype != np.float32 else a


def _short(name: str) -> str:
    """A converter tensor name (``model/layer/Op;model/other/Op``) as ``layer/Op``."""
    first = name.split(";")[0]
    parts = first.split("/")
    return "/".join(parts[1:]) if len(parts) > 2 else first


def compare_tflite(reference: str, candidate: str, images: list) -> list[dict]:
    """Rows for every op output the two files share, in the candidate's execution order.

    Args:
        reference: the fp32 ``.tflite``; candidate: the quantized one (same weights).
        images: a few images (paths or uint8 arrays), each fed to both models.
    """
    its = {p: _interpreter(p) for p in (reference, candidate)}
    plans = {p: _input_plan(p, it) for p, it in its.items()}
    ref_out = {name: (idx, q) for name, _, idx, q in _op_outputs(its[reference])}
    cand = [(n, op, idx, q) for n, op, idx, q in _op_outputs(its[candidate]) if n in ref_out]
    acc = {n: np.zeros(5) for n, *_ in cand}  # sum err^2, sum ref^2, sum ref, count, dot
    norms = {n: np.zeros(2) for n, *_ in cand}
    for image in images:
        _run(its[reference], *plans[reference], image)
        ref_vals = {n: _value(its[reference], *ref_out[n]) for n, *_ in cand}
        _run(its[candidate], *plans[candidate], image)
        for n, _, idx, q in cand:
            a, b = ref_vals[n], _value(its[candidate], idx, q)
            if a is None or b is None or a.shape != b.shape:
                continue
            a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
            acc[n] += [np.sum((b64 - a64) ** 2), np.sum(a64 ** 2), np.sum(a64), a64.size, np.dot(a64, b64)]
            norms[n] += [np.sum(b64 ** 2), 0.0]
    rows = []
    for i, (n, op, _, q) in enumerate(cand):
        se, ss, s, cnt, dot = acc[n]
        if cnt == 0:
            continue
        rmse = float(np.sqrt(se / cnt))
        var = max(ss / cnt - (s / cnt) ** 2, 0.0)
        denom = float(np.sqrt(ss * norms[n][0]))
        rows.append({"index": i, "tensor": _short(n), "op": op,
                     "rmse_over_scale": rmse / q[0] if q else None,
                     "rel_rmse": rmse / float(np.sqrt(var)) if var > 0 else None,
                     "cosine": float(dot / denom) if denom > 0 else None, "scale": q[0] if q else None})
    return rows


def tensor_table(reference: str, candidate: str, images: list) -> dict | None:
    """The ``layer_errors`` section (kind ``tensors``): worst ``rmse_over_scale`` first."""
    rows = compare_tflite(reference, candidate, images)
    if not rows:
        return None
    first = next((r for r in rows if (r["rmse_over_scale"] or 0) > BROKEN_RANGE), None)
    rows.sort(key=lambda r: -(r["rmse_over_scale"] if r["rmse_over_scale"] is not None else -1.0))
    where = (f" First tensor beyond {BROKEN_RANGE:g}: #{first['index']} {first['tensor']} ({first['op']}, "
             f"rmse/scale {first['rmse_over_scale']:.2f})." if first else
             f" No tensor beyond {BROKEN_RANGE:g} rmse/scale.")
    return {
        "source": f"computed by edgedet validate against {os.path.basename(reference)}", "kind": "tensors",
        "columns": COLUMNS, "rows": rows,
        "note": (f"Every op output of this int8 file against the same tensor of the fp32 TFLite file, on "
                 f"{len(images)} images; errors compound from the input (0.29 rmse/scale = rounding only).{where}"),
    }
