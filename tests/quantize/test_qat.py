"""QAT for both families on the tiny rows: quantize_apply, a training step, full-integer conversion.

``test`` is the D family in miniature (swish, squeeze-excite Multiply, fast normalised fusion,
max-pool/nearest resampling, shared heads); ``test-lite`` the Lite family (ReLU6, sum fusion).
"""
from __future__ import annotations

import numpy as np
import pytest

from edgedet.errors import ConfigError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["d", "lite"])
def family(request, synth, qhelpers):
    """(name, cfg, float model, QAT model) built once per family."""
    from edgedet.quantize.qat_graph import quantize_model

    model, cfg = qhelpers.build_realistic(qhelpers.FAMILIES[request.param], synth)
    return request.param, cfg, model, quantize_model(model)


def _freeze_bn(qat):
    import tf_keras as keras

    for layer in qat.layers:
        if isinstance(getattr(layer, "layer", None), keras.layers.BatchNormalization):
            layer.layer.trainable = False


def test_quantize_apply_wraps_every_layer_and_folds_bn(family):
    import tf_keras as keras

    from edgedet.quantize.qat_graph import annotate, unfolded_batchnorms

    _, _, _, qat = family
    kinds = {type(layer).__name__ for layer in qat.layers}
    assert kinds <= {"InputLayer", "QuantizeLayer", "QuantizeWrapperV2"}, kinds
    bns = [layer for layer in qat.layers if isinstance(getattr(layer, "layer", None), keras.layers.BatchNormalization)]
    assert bns and unfolded_batchnorms(qat) == []  # every BN folds into its conv
    assert [n.removeprefix("quant_") for n in qat.output_names] == [f"{k}_p{lv}" for k in ("class", "box") for lv in range(3, 8)]
    with pytest.raises(ConfigError, match="already quantization-aware"):
        annotate(qat)


def test_qat_trains_a_step(family, synth, qhelpers):
    import tensorflow as tf
    import tf_keras as keras

    from edgedet.train.datasets import load_dataset
    from edgedet.train.input import make_dataset
    from edgedet.train.losses import detection_loss

    from edgedet.quantize.qat_graph import calibrate_ranges

    _, cfg, _, qat = family
    _freeze_bn(qat)
    calibrate_ranges(qat, [qhelpers.synth_images(synth, cfg.image_size, mean=cfg.mean, std=cfg.std)])
    ds = load_dataset(synth)
    batch = make_dataset(ds.splits["train"][:4], image_size=cfg.image_size, num_classes=cfg.num_classes, mean=cfg.mean,
                         std=cfg.std, anchor_config=cfg.anchor_config, batch_size=4, training=True)
    images, targets = next(iter(batch))
    ranges = [v for v in qat.non_trainable_weights if "_max" in v.name]
    before = [v.numpy().copy() for v in qat.trainable_weights], [v.numpy().copy() for v in ranges]
    opt = keras.optimizers.SGD(1e-3, momentum=0.9)
    with tf.GradientTape() as tape:
        loss = detection_loss(qat(images, training=True), targets["cls"], targets["box"], cfg.num_classes)["loss"]
    grads = tape.gradient(loss, qat.trainable_weights)
    assert sum(g is None for g in grads) == 0  # gradients flow through every fake-quant (straight-through)
    opt.apply_gradients(zip(grads, qat.trainable_weights))
    assert np.isfinite(float(loss))
    # The focal loss reaches every class-net and shared weight; the box net only at levels with a
    # positive anchor in these 4 images.
    dead = [v.name for g, v in zip(grads, qat.trainable_weights)
            if "kernel" in v.name and not v.name.startswith("box_net") and not np.any(g.numpy())]
    assert dead == []
    moved = sum(not np.array_equal(a, v.numpy()) for a, v in zip(before[0], qat.trainable_weights))
    assert moved > 0.8 * len(before[0])
    assert any(not np.array_equal(a, v.numpy()) for a, v in zip(before[1], ranges))  # ranges learn too


def test_qat_converts_to_full_integer_tflite(family, synth, qhelpers):
    from edgedet.model.efficientdet import OUTPUT_NAMES
    from edgedet.convert.tflite_converter import float_ops, interpreter, keras_to_tflite, op_counts

    name, cfg, _, qat = family
    _freeze_bn(qat)
    from edgedet.quantize.qat_graph import calibrate_ranges

    x = qhelpers.synth_images(synth, cfg.image_size, mean=cfg.mean, std=cfg.std)
    assert calibrate_ranges(qat, [x[:4], x[4:]]) > 100  # what the QAT trainer does before its first step
    blob = keras_to_tflite(qat, "int8", io_dtype="int8")
    assert float_ops(blob) == []
    ops = op_counts(blob)
    assert "DEQUANTIZE" not in ops
    if name == "d":  # swish = LOGISTIC * x, SE gate, fusion weights: all as int8 ops
        assert ops.get("LOGISTIC", 0) > 0 and ops.get("MUL", 0) > 0 and ops.get("MEAN", 0) > 0
    it = interpreter(blob)
    # Converted through the frozen-graph path (no SavedModel detour); the signature is rebuilt.
    sig = it.get_signature_list()["serving_default"]
    assert sig["inputs"] == ["images"] and sorted(sig["outputs"]) == sorted(OUTPUT_NAMES)
    assert [d["name"] for d in it.get_output_details()] == list(OUTPUT_NAMES)
    for t in it.get_tensor_details():  # activations int8, biases int32: nothing float anywhere
        assert np.dtype(t["dtype"]) in (np.int8, np.int32), (t["name"], t["dtype"])
    inp = it.get_input_details()[0]
    scale, zero = inp["quantization"]
    got = {n: [] for n in ("class_p3", "class_p4")}
    for img in x[:4]:
        it.set_tensor(inp["index"], np.clip(np.round(img[None] / scale + zero), -128, 127).astype(np.int8))
        it.invoke()
        for d in it.get_output_details():
            if d["name"] in got:
                s, z = d["quantization"]
                got[d["name"]].append((it.get_tensor(d["index"]).astype(np.float32) - z) * s)
    ref = qat(x[:4], training=False)
    for i, key in enumerate(got):  # the device model is the model QAT trained (class bias -2 everywhere:
        a, b = ref[i].numpy().ravel() + 2, np.concatenate(got[key]).ravel() + 2  # splat-bias workaround)
        cos = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
        assert cos >= 0.995, (key, cos)


def test_qat_keeps_the_float_runs_frozen_layers_by_default(tmp_path):
    """QAT fine-tunes with the float recipe's frozen backbone unless told otherwise ("0": none)."""
    import json

    from edgedet.quantize.qat import qat_options

    run = tmp_path / "float"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({
        "kind": "float", "variant": "test", "image_size": 128, "dataset": str(tmp_path), "class_names": ["a"],
        "train": {"model": "test", "lr": 0.04, "batch": 4, "freeze_backbone": "3"}}))
    assert qat_options(str(run), str(tmp_path / "q")).freeze_backbone == "3"
    assert qat_options(str(run), str(tmp_path / "q"), freeze_backbone="0").freeze_backbone is None
    assert qat_options(str(run), str(tmp_path / "q"), freeze_backbone="all").freeze_backbone == "all"
    o = qat_options(str(run), str(tmp_path / "q"))
    assert o.lr == pytest.approx(0.004) and o.batch == 4
