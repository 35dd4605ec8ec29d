"""The BiFPN node list is pinned; WeightedFusion passes a run_layer_test-style check."""
from __future__ import annotations

import numpy as np
import pytest

from edgedet.model.bifpn import NODES


def test_bifpn_node_list_is_pinned():
    # google/automl bifpn_config for P3-P7 (feature level, input offsets). Changing it changes
    # the architecture and invalidates every trained checkpoint.
    assert NODES == (
        (6, (3, 4)),
        (5, (2, 5)),
        (4, (1, 6)),
        (3, (0, 7)),
        (4, (1, 7, 8)),
        (5, (2, 6, 9)),
        (6, (3, 5, 10)),
        (7, (4, 11)),
    )


def _expected(method, xs, w):
    if method == "sum":
        return sum(xs)
    if method == "fast":
        r = np.maximum(w, 0)
        r = r / (r.sum() + 1e-4)
    else:
        r = np.exp(w - w.max())
        r = r / r.sum()
    return sum(ri * x for ri, x in zip(r, xs))


@pytest.mark.parametrize("method", ["fast", "softmax", "sum"])
def test_weighted_fusion_layer(method, tmp_path):
    import tf_keras as keras

    from edgedet.model import WeightedFusion, custom_objects

    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(2, 4, 4, 3)).astype(np.float32) for _ in range(3)]

    # Build + call + shapes.
    layer = WeightedFusion(method, name="fuse")
    out = layer([keras.backend.constant(x) for x in xs])
    assert tuple(out.shape) == (2, 4, 4, 3)
    n_weights = 0 if method == "sum" else 3
    assert sum(int(np.prod(w.shape)) for w in layer.trainable_weights) == n_weights
    assert layer.compute_output_shape([(2, 4, 4, 3)] * 3) == (2, 4, 4, 3)
    np.testing.assert_allclose(out.numpy(), _expected(method, xs, np.ones(3)), rtol=1e-5, atol=1e-6)

    # Non-trivial weights, including a negative one (fast fusion clips it with ReLU).
    if n_weights:
        w = np.array([2.0, -1.0, 0.5], np.float32)
        layer.set_weights([w])
        np.testing.assert_allclose(layer(xs).numpy(), _expected(method, xs, w), rtol=1e-5, atol=1e-6)

    # get_config / from_config round trip gives the same layer.
    cfg = layer.get_config()
    assert cfg["method"] == method and cfg["epsilon"] == pytest.approx(1e-4)
    clone = WeightedFusion.from_config(cfg)
    clone(xs)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(xs).numpy(), layer(xs).numpy())

    # Serialisation inside a tiny model (Keras object registry).
    inputs = [keras.Input((4, 4, 3)) for _ in range(3)]
    model = keras.Model(inputs, WeightedFusion(method, name="fuse")(inputs))
    if n_weights:
        model.get_layer("fuse").set_weights([np.array([0.3, 1.0, 2.0], np.float32)])
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path, custom_objects=custom_objects())
    np.testing.assert_array_equal(loaded.predict(xs, verbose=0), model.predict(xs, verbose=0))


def test_weighted_fusion_rejects_bad_arguments():
    import tf_keras as keras

    from edgedet.model import WeightedFusion

    with pytest.raises(ValueError):
        WeightedFusion("mean")
    with pytest.raises(ValueError):
        WeightedFusion()([keras.Input((2, 2, 1))])
