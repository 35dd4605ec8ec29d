"""Fixtures for the runtime tests: one tiny edgedet model exported to every runtime format.

Built once per session (TensorFlow is imported here, in the fixtures only — the runtime under
test never imports it). Exports use the project's own converters where they exist
(edgedet.quantize.tflite.keras_to_tflite + metadata.embed_tflite); ONNX goes through tf2onnx
and OpenVINO through openvino.convert_model on that ONNX file.
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
        from edgedet.quantize.tflite import output_names
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

    def tflite(self, mode: str = "fp32") -> str:
        key = f"tflite-{mode}"
        if key not in self._paths:
            from edgedet.quantize.tflite import keras_to_tflite
            from edgedet.runtime.metadata import embed_tflite

            model = self.keras
            rep = list(self.representative()) if mode == "int8" else None
            data = keras_to_tflite(model, mode, representative=rep)
            path = self.root / f"test_{key}.tflite"
            path.write_bytes(data)
            q = {"method": "ptq", "io_dtype": "uint8"} if mode == "int8" else {"method": "none"}
            embed_tflite(str(path), self.meta(key, q))
            self._paths[key] = str(path)
        return self._paths[key]

    def onnx(self) -> str:
        if "onnx" not in self._paths:
            import onnx
            import tensorflow as tf
            import tf2onnx

            from edgedet.quantize.tflite import output_names

            model = self.keras
            names = output_names(model)

            @tf.function(input_signature=[tf.TensorSpec([1, RT_SIZE, RT_SIZE, 3], tf.float32, name="images")])
            def serve(images):
                return {n: o for n, o in zip(names, model(images, training=False))}

            proto, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=13)
            # from_function names outputs after the dict keys; keep our order
            order = {n: i for i, n in enumerate(names)}
            outs = sorted(proto.graph.output, key=lambda o: order.get(o.name.split(":")[0], 99))
            del proto.graph.output[:]
            proto.graph.output.extend(outs)
            entry = proto.metadata_props.add()
            entry.key, entry.value = "edgedet", self.meta("onnx").to_json()
            path = self.root / "test_onnx.onnx"
            onnx.save(proto, str(path))
            self._paths["onnx"] = str(path)
        return self._paths["onnx"]

    def openvino(self) -> str:
        if "openvino" not in self._paths:
            import openvino as ov

            model = ov.convert_model(self.onnx())
            model.set_rt_info(self.meta("openvino-fp32").to_json(), "edgedet")
            out = self.root / "test_openvino-fp32"
            out.mkdir(exist_ok=True)
            ov.save_model(model, str(out / "model.xml"), compress_to_fp16=False)
            self._paths["openvino"] = str(out)
        return self._paths["openvino"]

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
