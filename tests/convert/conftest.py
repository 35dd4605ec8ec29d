"""Fixtures for the convert tests: a tiny run folder and its exports, built once per session.

The run is the ``test-lite`` row (relu6, sum fusion) at 128 px with 3 classes, made to behave
like a trained detector by ``tests/realistic.py``; everything else is the real architecture and
the real export path.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))  # --import-mode=importlib adds no test folder itself
from realistic import make_realistic  # noqa: E402

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SIZE = 128
LABELS = ["RBC", "WBC", "Platelets"]


def make_run(out: Path, variant: str = "test-lite", num_classes: int = 3, image_size: int | None = SIZE,
             seed: int = 0, labels=None) -> Path:
    """Write a run folder (run.json + best.weights.h5) the way ``edgedet train`` does."""
    import tensorflow as tf

    from edgedet.model import build_model, get_config
    from edgedet import runs as ck

    tf.keras.utils.set_random_seed(seed)
    cfg = get_config(variant, num_classes=num_classes, image_size=image_size)
    model = build_model(cfg)
    rng = np.random.default_rng(seed)
    x = _images(cfg.image_size, rng)
    make_realistic(model, x, rng)
    out.mkdir(parents=True, exist_ok=True)
    ck.save_weights(model, out / ck.BEST)
    labels = list(labels or (LABELS if num_classes == 3 else [f"class{i}" for i in range(num_classes)]))
    data = {
        "kind": "float", "variant": cfg.name, "image_size": cfg.image_size, "num_classes": cfg.num_classes,
        "class_names": labels, "mean": list(cfg.mean), "std": list(cfg.std), "model_config": cfg.to_dict(),
        "dataset": str(Path(os.environ.get("EDGEDET_SHARED", Path(__file__).resolve().parents[2].parent / "shared")) / "datasets" / "bccd"),
        "best": {"epoch": 1, "metrics": {"AP": 0.25, "AP50": 0.5}}, "weights": {"best": ck.BEST},
        "weights_sha256": ck.sha256_file(out / ck.BEST),
    }
    (out / ck.RUN_JSON).write_text(json.dumps(data, indent=2))
    return out


def _images(size: int, rng) -> np.ndarray:
    """``(N, S, S, 3)`` normalised real images (BCCD train split when present, else smooth noise)."""
    from edgedet.runtime.preprocess import letterbox, load_image, normalize

    root = Path(os.environ.get("EDGEDET_SHARED", Path(__file__).resolve().parents[2].parent / "shared")) / "datasets" / "bccd"
    names = (root / "ImageSets" / "Main" / "train.txt").read_text().split()[:8] if (root / "ImageSets").is_dir() else []
    if names:
        return np.stack([normalize(letterbox(load_image(root / "JPEGImages" / f"{n}.jpg"), (size, size))[0]) for n in names])
    low = rng.normal(0, 0.6, (8, size // 16, size // 16, 3)).astype(np.float32)
    return np.repeat(np.repeat(low, 16, axis=1), 16, axis=2)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("run") / "tiny")


@pytest.fixture(scope="session")
def qat_run(tiny_run, tmp_path_factory) -> Path:
    """A QAT run of the tiny run (see :func:`make_qat_run`), shared by the QAT tests."""
    return make_qat_run(tiny_run, tmp_path_factory.mktemp("qat") / "qat_run")


@pytest.fixture(scope="session")
def bccd_images(bccd) -> list[str]:
    """A few BCCD test-split images (real microscope pictures, 640x480)."""
    names = (bccd / "ImageSets" / "Main" / "test.txt").read_text().split()[:4]
    return [str(bccd / "JPEGImages" / f"{n}.jpg") for n in names]


ALL_TARGETS = [
    "tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8", "edgetpu",
    "onnx", "onnx-int8", "openvino-fp32", "openvino-fp16", "openvino-int8",
]


@pytest.fixture(scope="session")
def calib_dir(bccd) -> str:
    """The BCCD dataset root: convert uses its train split for calibration."""
    return str(bccd)


@pytest.fixture(scope="session")
def exports(tiny_run, calib_dir, tmp_path_factory):
    """Every target of the tiny run, through the same API the CLI uses (one session-wide call)."""
    from edgedet.convert.api import convert

    out = tmp_path_factory.mktemp("exports")
    lines: list[str] = []
    arts, source = convert(ALL_TARGETS, weights=str(tiny_run), calib_data=calib_dir, calib_count=24, out_dir=str(out), log=lines.append)
    return {"paths": {a.target: a.path for a in arts}, "artifacts": arts, "source": source, "log": lines, "out": out}


def keras_outputs(run, x):
    """Float reference: the run's Keras model on normalised ``(1, S, S, 3)`` input."""
    model, _ = _cached_run(str(run))
    return [o.numpy() for o in model(x, training=False)]


_RUNS: dict = {}


def _cached_run(run: str):
    if run not in _RUNS:
        from edgedet.runs import load_run

        _RUNS[run] = load_run(run)
    return _RUNS[run]


def normalised(path: str, size: int = SIZE):
    """An image letterboxed and normalised like the runtime does it: ``(1, S, S, 3)`` float32."""
    from edgedet.runtime.preprocess import letterbox, load_image, normalize

    canvas, _ = letterbox(load_image(path), (size, size), (127.0, 127.0, 127.0))
    return normalize(canvas, (127.0,) * 3, (128.0,) * 3)[None]


NAMES = [f"class_p{i}" for i in range(3, 8)] + [f"box_p{i}" for i in range(3, 8)]


def run_raw(path: str, x: np.ndarray) -> list[np.ndarray]:
    """Raw outputs (class_p3..box_p7, float, dequantised) of any artifact for normalised input ``x``."""
    if path.endswith(".tflite"):
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=path, num_threads=1)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        if np.issubdtype(d["dtype"], np.integer):
            s, z = d["quantization"]
            info = np.iinfo(d["dtype"])
            xin = np.clip(np.round(x / s + z), info.min, info.max).astype(d["dtype"])
        else:
            xin = x.astype(d["dtype"])
        it.set_tensor(d["index"], xin)
        it.invoke()
        by = {}
        for o in it.get_output_details():
            a = it.get_tensor(o["index"]).astype(np.float32)
            if np.issubdtype(o["dtype"], np.integer):
                s, z = o["quantization"]
                a = (a - z) * s
            by[o["name"]] = a
        return [by[n] for n in NAMES]
    if path.endswith(".onnx"):
        import onnxruntime as ort

        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        outs = sess.run(NAMES, {sess.get_inputs()[0].name: x})
        return [np.asarray(o, np.float32) for o in outs]
    import openvino as ov

    from edgedet.runtime.metadata import openvino_xml

    # f32 execution: on CPUs with bf16 units (avx512_bf16, AMX) OpenVINO's CPU default is bf16, whose
    # ~1e-2 relative error would hide what the file itself computes.
    compiled = ov.Core().compile_model(openvino_xml(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    res = compiled(x)
    by = {o.get_any_name(): np.asarray(res[o], np.float32) for o in compiled.outputs}
    return [by[n] for n in NAMES]


@pytest.fixture(scope="session")
def cv():
    """Helpers for the convert tests (test modules cannot import conftest under importlib mode)."""
    from types import SimpleNamespace

    return SimpleNamespace(ALL_TARGETS=ALL_TARGETS, LABELS=LABELS, SIZE=SIZE, make_run=make_run,
                           keras_outputs=keras_outputs, normalised=normalised, run_raw=run_raw,
                           make_qat_run=make_qat_run)


def make_qat_run(float_run: Path, out: Path) -> Path:
    """A QAT run folder from ``float_run``, saved the way ``edgedet quantize qat`` saves it.

    Instead of fine-tuning, the fake-quant ranges are calibrated: one training-mode pass over
    real images with tfmot's moving-average decay forced to 0, so every activation range is the
    batch min/max (a QAT run reaches the same state after enough steps; with the stock decay of
    0.999 a few passes would leave the initial [-6, 6] ranges and a meaningless model)."""
    import tf_keras as keras
    from tensorflow_model_optimization.python.core.quantization.keras import quantizers

    from edgedet.quantize.qat_graph import quantize_model
    from edgedet import runs as ck

    model, info = ck.load_run(float_run)
    qmodel = quantize_model(model)
    for layer in qmodel.layers:
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, keras.layers.BatchNormalization):
            inner.trainable = False
    x = _images(info.config.image_size, np.random.default_rng(1))
    orig = quantizers.quant_ops.MovingAvgQuantize

    def no_decay(*args, **kwargs):
        kwargs["ema_decay"] = 0.0
        return orig(*args, **kwargs)

    quantizers.quant_ops.MovingAvgQuantize = no_decay
    try:
        qmodel(x, training=True)  # every fake-quant range := this batch's min/max
    finally:
        quantizers.quant_ops.MovingAvgQuantize = orig
    out.mkdir(parents=True, exist_ok=True)
    ck.save_weights(qmodel, out / ck.BEST)
    data = json.loads((Path(float_run) / ck.RUN_JSON).read_text())
    data.update({"kind": "qat", "source_run": str(Path(float_run).resolve()), "weights": {"best": ck.BEST},
                 "weights_sha256": ck.sha256_file(out / ck.BEST), "best": {"epoch": 0, "metrics": {"AP": 0.24, "AP50": 0.49}}})
    (out / ck.RUN_JSON).write_text(json.dumps(data, indent=2))
    return out
