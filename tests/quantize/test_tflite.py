"""keras_to_tflite on a tiny 10-output Functional model shaped like a detector (fast)."""
from __future__ import annotations

import numpy as np
import pytest

from edgedet.errors import ConfigError

NAMES = [f"class_p{lv}" for lv in range(3, 8)] + [f"box_p{lv}" for lv in range(3, 8)]


@pytest.fixture(scope="module")
def tiny():
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    x = keras.Input((64, 64, 3), name="image")
    y = keras.layers.Conv2D(8, 3, 2, padding="same", activation="relu")(x)
    feats = []
    for _ in range(5):
        y = keras.layers.Conv2D(8, 3, 2, padding="same", activation="relu")(y)
        feats.append(y)
    # Box outputs built first so that the graph order differs from the output order.
    box = [keras.layers.Conv2D(36, 3, padding="same", name=f"box_p{i + 3}")(f) for i, f in enumerate(feats)]
    cls = [keras.layers.Conv2D(27, 3, padding="same", name=f"class_p{i + 3}")(f) for i, f in enumerate(feats)]
    return keras.Model(x, cls + box)


@pytest.fixture(scope="module")
def rep():
    rng = np.random.default_rng(0)
    return [rng.normal(size=(1, 64, 64, 3)).astype(np.float32) for _ in range(8)]


def test_fp32_names_order_and_parity(tiny):
    from edgedet.convert.tflite_converter import interpreter, keras_to_tflite

    it = interpreter(keras_to_tflite(tiny, "fp32"))
    assert [d["name"] for d in it.get_output_details()] == NAMES
    assert list(it.get_input_details()[0]["shape"]) == [1, 64, 64, 3]  # static batch 1
    sig = it.get_signature_list()["serving_default"]
    assert sig["inputs"] == ["images"] and sorted(sig["outputs"]) == sorted(NAMES)
    x = np.random.default_rng(1).normal(size=(1, 64, 64, 3)).astype(np.float32)
    ref = [o.numpy() for o in tiny(x)]
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    for d, r in zip(it.get_output_details(), ref):
        np.testing.assert_allclose(it.get_tensor(d["index"]), r, atol=1e-4)
    runner = it.get_signature_runner()
    out = runner(images=x)
    np.testing.assert_allclose(out["class_p3"], ref[0], atol=1e-4)


def test_modes_and_errors(tiny, rep):
    from edgedet.convert.tflite_converter import float_ops, interpreter, keras_to_tflite, op_counts

    with pytest.raises(ConfigError, match="did you mean 'int8'"):
        keras_to_tflite(tiny, "int9")
    with pytest.raises(ConfigError, match="representative"):
        keras_to_tflite(tiny, "int8")
    with pytest.raises(ConfigError, match="io dtype"):
        keras_to_tflite(tiny, "int8", rep, io_dtype="int16")
    fp16 = keras_to_tflite(tiny, "fp16")
    assert "DEQUANTIZE" in op_counts(fp16)  # float16 weights dequantized at load
    assert float_ops(keras_to_tflite(tiny, "fp32"))  # a float model is all float ops
    for io in ("uint8", "int8"):
        b = keras_to_tflite(tiny, "int8", rep, io_dtype=io)
        it = interpreter(b)
        assert it.get_input_details()[0]["dtype"] == np.dtype(io)
        assert {np.dtype(d["dtype"]) for d in it.get_output_details()} == {np.dtype(io)}
        assert float_ops(b) == []


def test_int8_is_deterministic(tiny, rep):
    from edgedet.convert.tflite_converter import keras_to_tflite

    a = keras_to_tflite(tiny, "int8", rep)
    b = keras_to_tflite(tiny, "int8", lambda: iter(rep))  # a callable works too
    assert a == b
    c = keras_to_tflite(tiny, "int8", rep[:4])
    assert c != a  # other calibration data, other ranges


def test_nearest_upsampling_is_traced_as_concat_reshape_for_xnnpack(rep):
    """XNNPACK cannot run RESIZE_NEAREST_NEIGHBOR (each one cut the delegated graph): the TFLite
    trace writes it as CONCATENATION + RESHAPE, bit-identical, in fp32 and int8; the Keras layer
    itself is left as it was."""
    import tf_keras as keras

    from edgedet.convert.tflite_converter import interpreter, keras_to_tflite, op_counts, xnnpack_upsampling

    keras.utils.set_random_seed(0)
    x = keras.Input((64, 64, 3), name="image")
    y = keras.layers.Conv2D(8, 3, 4, padding="same", activation="relu")(x)           # 16x16
    low = keras.layers.Conv2D(8, 3, 2, padding="same", activation="relu")(y)         # 8x8
    up = keras.layers.UpSampling2D(2, interpolation="nearest", name="up")(low)       # 16x16
    s = keras.layers.Add()([y, up])
    outs = [keras.layers.Conv2D(4, 1, name=n)(s) for n in ("class_p3", "box_p3")]
    model = keras.Model(x, outs)
    xin = rep[0]
    ref = [o.numpy() for o in model(xin)]
    for mode in ("fp32", "int8"):
        data = keras_to_tflite(model, mode, rep if mode == "int8" else None, io_dtype="float32")
        ops = op_counts(data)
        assert "RESIZE_NEAREST_NEIGHBOR" not in ops and ops.get("CONCATENATION") == 2 and ops.get("RESHAPE") == 2, ops
        it = interpreter(data)
        it.set_tensor(it.get_input_details()[0]["index"], xin)
        it.invoke()
        got = [it.get_tensor(d["index"]) for d in it.get_output_details()]
        tol = 1e-5 if mode == "fp32" else 0.05 * float(np.abs(ref[0]).max())
        for g, r in zip(got, ref):
            np.testing.assert_allclose(g, r, atol=tol)
    # the Keras layer is untouched after (and outside) the trace
    up_layer = model.get_layer("up")
    assert "call" not in vars(up_layer)
    np.testing.assert_array_equal(up_layer(np.arange(4, dtype=np.float32).reshape(1, 2, 2, 1)).numpy()[0, :, :, 0],
                                  [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
    with xnnpack_upsampling(model) as n:
        assert n == 1
