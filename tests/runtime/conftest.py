"""Fixtures for the runtime tests: one tiny edgedet model exported to every runtime format.

Built once per session (TensorFlow is imported here, in the fixtures only — the runtime under
test never imports it). Exports go through the project's convert registry
(edgedet.convert.api.run_targets), so the files are exactly what `edgedet convert` writes.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

LABELS = ["red", "white", "platelet"]
RT_SIZE = 128


def synthetic_image(h: int = 240, w: int = 320, seed: int = 0) -> np.ndarray:
    """A deterministic RGB image with smooth gradients and a few solid blobs (uint8 (h, w, 3))."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx / w * 200, yy / h * 200, (xx + yy) / (w + h) * 255], axis=-1)
    for _ in range(6):
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        r = rng.integers(10, 40)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        img[mask] = rng.integers(0, 255, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


class RuntimeModels:
    """Lazily exported artifacts of one tiny model (``test`` config, 3 classes, 128 px)."""

    def __init__(self, root: Path):
        self.root = root
        self._model = None
        self._paths: dict[str, str] = {}

    @property
    def keras(self):
        if self._model is None:
            from edgedet.model import build_model, get_config

            import tf_keras as keras

            keras.utils.set_random_seed(0)
            cfg = get_config("test", num_classes=len(LABELS), image_size=RT_SIZE)
            model = build_model(cfg)
            self.cfg, self._model = cfg, model
            _make_outputs_informative(model, np.concatenate(list(self.representative())))
        return self._model

    def meta(self, target: str, quant: dict | None = None):
        from edgedet.convert.tflite_converter import output_names
        from edgedet.runtime.metadata import ModelMeta

        m = self.keras
        return ModelMeta(labels=list(LABELS), input_size=(RT_SIZE, RT_SIZE), mean=tuple(self.cfg.mean),
                         std=tuple(self.cfg.std), anchors=self.cfg.anchor_config.to_dict(),
                         output_names=output_names(m), model="test", target=target,
                         quantization=quant or {"method": "none"})

    def representative(self):
        from edgedet.runtime.preprocess import letterbox, normalize

        for seed in range(8):
            canvas, _ = letterbox(synthetic_image(seed=seed), (RT_SIZE, RT_SIZE), self.cfg.mean)
            yield normalize(canvas, self.cfg.mean, self.cfg.std)[None]

    def _export(self, target: str, nms: bool = False) -> str:
        """Export with the project's convert registry (edgedet.convert), cached per session."""
        key = f"{target}{'-nms' if nms else ''}"
        if key not in self._paths:
            from edgedet.convert.api import Context, run_targets
            from edgedet.convert.registry import resolve_targets
            from edgedet.convert.source import Source
            from PIL import Image

            calib = self.root / "calib"
            if not calib.is_dir():
                calib.mkdir()
                for seed in range(8):
                    Image.fromarray(synthetic_image(seed=seed)).save(calib / f"{seed}.png")
            model = self.keras
            src = Source(kind="float", stem="test_nms" if nms else "test", meta=self.meta(""), path=str(self.root), _model=model)
            ctx = Context(source=src, calib_data=str(calib), calib_count=8, nms=nms, log=lambda msg: None,
                          work_dir=str(self.root))
            (art,) = run_targets(ctx, resolve_targets([target]), str(self.root), src.stem)
            self._paths[key] = art.path
        return self._paths[key]

    def tflite(self, mode: str = "fp32", nms: bool = False) -> str:
        return self._export(f"tflite-{mode}", nms=nms)

    def onnx(self) -> str:
        return self._export("onnx")

    def openvino(self) -> str:
        return self._export("openvino-fp32")

    def keras_detections(self, image: np.ndarray, **post):
        """Reference: the Keras float model + the shared pre/post-processing."""
        from edgedet.runtime.anchors import generate_anchors
        from edgedet.runtime.postprocess import postprocess, to_original
        from edgedet.runtime.preprocess import letterbox, normalize

        model = self.keras
        canvas, scale = letterbox(image, (RT_SIZE, RT_SIZE), self.cfg.mean)
        outs = model(normalize(canvas, self.cfg.mean, self.cfg.std)[None], training=False)
        outs = [np.asarray(o)[0] for o in outs]
        d = postprocess(outs[:5], outs[5:], generate_anchors(RT_SIZE, self.cfg.anchor_config), labels=LABELS, **post)
        return to_original(d, scale, image.shape)


def _make_outputs_informative(model, batch: np.ndarray) -> None:
    """Give a randomly initialised model outputs that vary with the image, like a trained one.

    Untrained, activations vanish through the small-init separable convs and every anchor
    scores the prior (~0.01). Setting each BatchNorm's moving statistics to the batch statistics
    of real inputs (one training-mode pass with momentum 0) keeps activations at unit scale; then
    the class head is sharpened so a handful of anchors score high and NMS has real work to do.
    """
    import tf_keras as keras

    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    saved = [l.momentum for l in bns]
    for l in bns:
        l.momentum = 0.0
    model(batch, training=True)
    for l, m in zip(bns, saved):
        l.momentum = m
    outs = [np.asarray(o) for o in model(batch, training=False)]
    cls_std = float(np.std(np.concatenate([o.reshape(-1) for o in outs[:5]])))
    box_std = float(np.std(np.concatenate([o.reshape(-1) for o in outs[5:]])))
    layer = model.get_layer("class_net_predict_pw")
    k, b = layer.get_weights()
    layer.set_weights([k * (1.5 / max(cls_std, 1e-9)), np.full_like(b, -4.0)])
    layer = model.get_layer("box_net_predict_pw")
    k, b = layer.get_weights()
    layer.set_weights([k * (0.3 / max(box_std, 1e-9)), b])


@pytest.fixture(scope="session")
def rt_models(tmp_path_factory) -> RuntimeModels:
    pytest.importorskip("tensorflow")
    return RuntimeModels(tmp_path_factory.mktemp("rt_models"))


@pytest.fixture(scope="session")
def rt_image() -> np.ndarray:
    return synthetic_image()
