"""Post-training quantization of a float run: full-integer int8, fp16 and dynamic-range TFLite.

Calibration images are a seeded sample (300 by default) of the dataset's *train* split (or of
an image folder), pre-processed by :class:`edgedet.convert.calib.Calibration`, which uses
``edgedet.runtime.preprocess`` (letterbox with mean padding, ``(x - mean) / std``) so the
calibration sees exactly what the runtime feeds. The set's sha256 (names + bytes of the
chosen files) goes into every artifact's metadata (``calib_sha256``) and ``ptq.json``.

The artifacts are written by the convert stage's TFLite exporter (same names, metadata and
atomic install as ``edgedet convert``): ``OUT/<variant>_tflite-int8.tflite``,
``..._tflite-fp16.tflite``, ``..._tflite-dynamic.tflite``, plus ``OUT/ptq.json``::

    {"run": ..., "calibration": {"path", "images", "seed", "sha256"}, "io_dtype": "uint8",
     "artifacts": {"int8": {"path", "bytes", "seconds", "cosine": {"class_p3": 0.99, ...}}, ...}}

``cosine`` compares each artifact's outputs with the float Keras model on up to 16
held-out (val/test) images: a quick "does it track float" figure, not the mAP.
"""
from __future__ import annotations

import json
import os
import sys
import time

from edgedet.errors import ConfigError, DataError

MODES = ("int8", "fp16", "dynamic")
MIN_RECOMMENDED = 100
DEFAULT_COUNT = 300


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_model_config(run_dir):
    """The run's :class:`edgedet.model.config.ModelConfig` from run.json (no TensorFlow)."""
    from edgedet.errors import ModelFileError
    from edgedet.model.config import ModelConfig
    from edgedet.runs import read_run_json

    try:
        return ModelConfig.from_dict(read_run_json(run_dir)["model_config"])
    except (KeyError, TypeError) as exc:
        raise ModelFileError(f"{run_dir}/run.json: no valid model_config ({exc})") from exc


def make_calibration(data: str, input_size, mean, std, count: int = DEFAULT_COUNT, seed: int = 0, batch: int = 8,
                     log=_log):
    """A seeded calibration set, checked for size.

    Args:
        data: dataset folder (train split used) / image folder / ``.txt`` list.
        input_size: ``(h, w)``; mean, std: pixel-unit normalisation.
        count: images wanted (all if fewer exist); seed: sampling seed.
        batch: the calibration batch; a smaller set is an error.

    Returns:
        :class:`edgedet.convert.calib.Calibration`; ``.arrays()`` yields float32 ``(1, h, w, 3)``.

    Raises:
        ConfigError: ``count``/``batch`` < 1. DataError: fewer images than ``batch``.
    """
    from edgedet.convert.calib import Calibration

    if count < 1 or batch < 1:
        raise ConfigError(f"calibration count ({count}) and batch ({batch}) must be >= 1")
    cal = Calibration(data, input_size, mean, std, count=count, seed=seed)
    if len(cal) < batch:
        raise DataError(f"{data}: calibration set has {len(cal)} image(s), fewer than the batch of {batch}")
    if len(cal) < MIN_RECOMMENDED:
        log(f"warning: only {len(cal)} calibration images from {data}; int8 ranges are more reliable with >= {MIN_RECOMMENDED}")
    return cal


def heldout_arrays(data: str | None, input_size, mean, std, limit: int = 16):
    """Up to ``limit`` normalised ``(1, h, w, 3)`` val (else test) images, for output checks."""
    import numpy as np

    from edgedet.runtime.preprocess import letterbox, load_image, normalize

    if not data:
        return []
    try:
        from edgedet.train.datasets import load_dataset

        ds = load_dataset(data)
    except Exception:  # noqa: BLE001 - an image folder: no held-out split to compare on
        return []
    samples = (ds.splits.get("val") or ds.splits.get("test") or [])[:limit]
    return [normalize(letterbox(load_image(s.image_path), input_size, mean)[0], mean, std)[None].astype(np.float32)
            for s in samples]


def output_cosines(model, tflite_bytes: bytes, arrays, batch: int = 8) -> dict[str, float]:
    """Per-output cosine similarity between the Keras model and a TFLite model.

    Args:
        model: tf_keras model (float or QAT); tflite_bytes: from ``keras_to_tflite``.
        arrays: list of normalised float32 ``(1, S, S, 3)``; batch: Keras batch size.

    Returns:
        ``{output name: cosine}`` over all arrays (flattened), names class_p3..box_p7.
    """
    import numpy as np

    from edgedet.convert.tflite_converter import output_names
    from edgedet.convert.tflite_converter import interpreter

    if not arrays:
        return {}
    names = output_names(model)
    ref = {n: [] for n in names}
    for i in range(0, len(arrays), batch):
        outs = model(np.concatenate(arrays[i:i + batch]), training=False)
        for n, o in zip(names, outs):
            ref[n].append(np.asarray(o))
    it = interpreter(tflite_bytes)
    got = {n: [] for n in names}
    inp = it.get_input_details()[0]
    outs = it.get_output_details()
    for x in arrays:
        it.set_tensor(inp["index"], _quantize(x, inp))
        it.invoke()
        for d in outs:
            got[d["name"]].append(_dequantize(it.get_tensor(d["index"]), d))
    result = {}
    for n in names:
        a = np.concatenate([r.ravel() for r in ref[n]]).astype(np.float64)
        b = np.concatenate([g.ravel() for g in got[n]]).astype(np.float64)
        denom = np.linalg.norm(a) * np.linalg.norm(b)
        result[n] = float(np.dot(a, b) / denom) if denom > 0 else float(np.allclose(a, b))
    return result


def _quantize(x, detail):
    import numpy as np

    dtype = detail["dtype"]
    if dtype == np.float32:
        return x.astype(np.float32)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def _dequantize(y, detail):
    import numpy as np

    if detail["dtype"] == np.float32:
        return y.astype(np.float32)
    scale, zero = detail["quantization"]
    return (y.astype(np.float32) - zero) * scale


def ptq(run_dir: str, data: str, out_dir: str | None = None, modes=MODES, count: int = DEFAULT_COUNT, seed: int = 0,
        batch: int = 8, io_dtype: str = "uint8", log=_log) -> dict:
    """Post-training quantize a float run to the TFLite ``modes``.

    Returns:
        The ``ptq.json`` dict (also written to ``out_dir``).

    Raises:
        ConfigError: the run is already QAT, or an unknown mode/io dtype.
        DataError: calibration set smaller than ``batch``.
    """
    from edgedet.errors import did_you_mean
    from edgedet.files import atomic_write_json
    from edgedet.runs import read_run_json

    modes = list(dict.fromkeys(modes))
    if not modes:
        raise ConfigError(f"--modes: give at least one of {', '.join(MODES)}")
    for m in modes:
        if m not in MODES:
            raise ConfigError(f"--modes: unknown mode {m!r}{did_you_mean(m, MODES)}; choose from {', '.join(MODES)}")
    if io_dtype not in ("uint8", "int8"):
        raise ConfigError(f"--io {io_dtype!r}: choose uint8 or int8")
    if read_run_json(run_dir).get("kind", "float") == "qat":
        raise ConfigError(f"{run_dir}: already a QAT run; post-training quantization needs the float run "
                          f"(convert a QAT run with `edgedet convert --weights {run_dir} --target tflite-int8`)")
    cfg = run_model_config(run_dir)
    # Check the calibration set before the (slow) model load.
    cal = make_calibration(data, (cfg.image_size, cfg.image_size), cfg.mean, cfg.std, count=count, seed=seed,
                           batch=batch, log=log)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from edgedet.convert.api import Context, run_targets
    from edgedet.convert.registry import resolve_targets
    from edgedet.convert.source import load_run_source

    t0 = time.perf_counter()
    source = load_run_source(run_dir)
    meta = source.meta
    out_dir = out_dir or os.path.join(run_dir, "ptq")
    ctx = Context(source=source, calib_data=data, calib_count=count, io_dtype=io_dtype, log=log)
    ctx.cache[("calib", "NHWC")] = cal  # the seeded, size-checked set (Context would sample with seed 0)
    log(f"load {time.perf_counter() - t0:.1f} s; calibration: {len(cal)} images (seed {seed}, sha256 {cal.sha256[:12]})")
    arts = run_targets(ctx, resolve_targets([f"tflite-{m}" for m in modes]), out_dir, source.stem)
    held = heldout_arrays(data, meta.input_size, meta.mean, meta.std)
    report = {"run": os.path.abspath(run_dir), "data": os.path.abspath(data), "calibration": cal.describe(),
              "io_dtype": io_dtype, "artifacts": {}}
    for mode, art in zip(modes, arts):
        with open(art.path, "rb") as f:
            blob = f.read()
        cos = output_cosines(source.model(), blob, held, batch=batch)
        report["artifacts"][mode] = {"path": os.path.abspath(art.path), "bytes": art.size,
                                     "seconds": round(art.seconds, 2), "cosine": cos}
        if cos:
            log(f"{mode:<8} cosine vs float on {len(held)} held-out images: min {min(cos.values()):.4f} "
                f"(class_p3 {cos.get('class_p3', float('nan')):.4f})")
    atomic_write_json(os.path.join(out_dir, "ptq.json"), report)
    return report


def load_report(path: str) -> dict:
    with open(path) as f:
        return json.load(f)
