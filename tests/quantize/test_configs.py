"""QuantizeConfigs and the QAT graph preparation (fast parts: layers, unsharing, bad input)."""
from __future__ import annotations

import numpy as np
import pytest

from edgedet.errors import ConfigError


@pytest.mark.parametrize("method", ["fast", "softmax", "sum"])
@pytest.mark.parametrize("n", [2, 3])
def test_quantized_fusion_matches_float_fusion(method, n):
    import tensorflow as tf

    from edgedet.model.layers import WeightedFusion
    from edgedet.quantize.configs import QuantizedWeightedFusion

    rng = np.random.default_rng(n)
    xs = [tf.constant(rng.normal(size=(2, 4, 4, 8)).astype(np.float32)) for _ in range(n)]
    ref = WeightedFusion(method)
    q = QuantizedWeightedFusion.from_config(ref.get_config())
    ref(xs), q(xs)
    if method != "sum":
        w = rng.uniform(0.2, 2.0, n).astype(np.float32)
        ref.set_weights([w])
        q.set_weights([w] + q.get_weights()[1:])
    # Fake-quant on each intermediate (initial range [-6, 6]): within half an 8-bit step per quantizer.
    n_fq = (n if method != "sum" else 0) + (n - 2)
    err = np.abs(q(xs, training=False).numpy() - ref(xs).numpy()).max()
    assert err <= n_fq * 0.5 * 12 / 255 + 1e-6
    if n_fq:
        assert err > 0  # the intermediates really are quantized
    q(xs, training=True)  # training mode runs (moving-average range update)
    cfg = q.get_config()
    assert cfg["method"] == method and QuantizedWeightedFusion.from_config(cfg).method == method


def test_unknown_layer_is_a_one_line_error():
    import tf_keras as keras

    from edgedet.quantize.qat_graph import annotate

    x = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(4, 3, padding="same")(x)
    y = keras.layers.LayerNormalization(name="odd_norm")(y)
    with pytest.raises(ConfigError) as e:
        annotate(keras.Model(x, y))
    msg = str(e.value)
    assert "odd_norm" in msg and "LayerNormalization" in msg and "\n" not in msg


def test_prepare_unshares_heads_and_keeps_outputs():
    import tf_keras as keras

    from edgedet.model import build_model, get_config
    from edgedet.model.layers import WeightedFusion
    from edgedet.quantize.configs import QuantizedWeightedFusion
    from edgedet.quantize.qat_graph import prepare_for_qat

    keras.utils.set_random_seed(0)
    model = build_model(get_config("test-lite", num_classes=3))
    shared = [layer.name for layer in model.layers if len(layer._inbound_nodes) > 1]
    assert shared  # the class/box nets share their convs across P3..P7
    prepared = prepare_for_qat(model)
    assert all(len(layer._inbound_nodes) == 1 for layer in prepared.layers)
    names = {layer.name for layer in prepared.layers}
    assert {f"{shared[0]}_p{lv}" for lv in range(3, 8)} <= names
    assert not any(type(layer) is WeightedFusion for layer in prepared.layers)
    assert any(isinstance(layer, QuantizedWeightedFusion) for layer in prepared.layers)
    assert prepared.output_names == model.output_names
    x = np.random.default_rng(0).normal(size=(2, 128, 128, 3)).astype(np.float32)
    # Same weights, same function, except the fusion's intermediate fake-quant (3-input sums).
    for a, b in zip(model(x), prepared(x)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=5e-3)


def test_qat_mini_model_converts_exactly_with_calibrated_ranges_and_splat_bias():
    """A conv whose bias is equal in every channel (an untrained class head) converts faithfully.

    TF 2.20's converter quantizes such a splat bias with channel 0's scale for every channel;
    keras_to_tflite breaks the splat for the conversion. calibrate_ranges replaces tfmot's
    [-6, 6] initial activation ranges by the data's.
    """
    import tf_keras as keras

    from edgedet.quantize.qat_graph import calibrate_ranges, quantize_model
    from edgedet.convert.tflite_converter import interpreter, keras_to_tflite

    keras.utils.set_random_seed(0)
    x = keras.Input((8, 8, 16))
    y = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    y = keras.layers.Conv2D(6, 1, name="head")(y)
    model = keras.Model(x, y)
    k, b = model.get_layer("head").get_weights()
    model.get_layer("head").set_weights([k, np.full_like(b, -2.0)])
    xs = np.random.default_rng(0).normal(size=(8, 8, 8, 16)).astype(np.float32)
    qat = quantize_model(model)
    calibrate_ranges(qat, [xs])
    out_min = [v for v in qat.non_trainable_weights if v.name.endswith("post_activation_min:0")]
    ref = qat(xs[:2], training=False).numpy()
    assert abs(float(out_min[-1].numpy()) - float(model(xs).numpy().min())) < 0.05  # the data's range, not -6
    it = interpreter(keras_to_tflite(qat, "int8", io_dtype="float32"))
    got = []
    for v in xs[:2]:
        it.set_tensor(it.get_input_details()[0]["index"], v[None])
        it.invoke()
        got.append(it.get_tensor(it.get_output_details()[0]["index"]))
    scale = it.get_output_details()[0]["quantization"][0] or 1.0
    assert np.abs(np.concatenate(got) - ref).max() <= 1.01 * scale  # within one output step everywhere
    assert np.array_equal(model.get_layer("head").get_weights()[1], np.full_like(b, -2.0))  # bias restored
