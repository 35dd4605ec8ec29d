"""Built graphs: output contract, heads, analytic counts == graph counts, save/load round trips."""
from __future__ import annotations

import math

import numpy as np
import pytest

from edgedet.model.analytic import count
from edgedet.model.config import get_config
from edgedet.runtime.anchors import feature_sizes

LEVELS = (3, 4, 5, 6, 7)


def _randomise(model, seed=0):
    """Non-trivial weights everywhere (incl. BN statistics and fusion weights)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        ws = layer.get_weights()
        if not ws:
            continue
        new = []
        for v, w in zip(layer.weights, ws):
            if "moving_variance" in v.name:
                new.append(rng.uniform(0.5, 1.5, w.shape).astype(np.float32))
            else:
                new.append((rng.normal(size=w.shape) * 0.2).astype(np.float32))
        layer.set_weights(new)


@pytest.fixture(scope="module", params=["test", "test-lite"])
def built(request):
    import tf_keras as keras

    from edgedet.model import build_model

    keras.backend.clear_session()
    # test-lite at 192 px also covers odd pyramid sizes: P3..P7 = 24, 12, 6, 3, 2, where the
    # BiFPN upsamples 2 -> 4 and crops to 3.
    cfg = get_config(request.param, num_classes=3, image_size=128 if request.param == "test" else 192)
    model = build_model(cfg)
    return cfg, model


def test_output_contract(built):
    from edgedet.model import OUTPUT_NAMES

    cfg, model = built
    assert model.output_names == list(OUTPUT_NAMES) == [f"class_p{l}" for l in LEVELS] + [f"box_p{l}" for l in LEVELS]
    assert tuple(model.input_shape) == (None, cfg.image_size, cfg.image_size, 3)
    x = np.random.default_rng(1).normal(size=(2, cfg.image_size, cfg.image_size, 3)).astype(np.float32)
    outs = [o.numpy() for o in model(x, training=False)]
    sizes = feature_sizes((cfg.image_size, cfg.image_size))
    for (h, w), c, b in zip(sizes, outs[:5], outs[5:]):
        assert c.shape == (2, h, w, 9 * cfg.num_classes) and b.shape == (2, h, w, 36)
        assert np.isfinite(c).all() and np.isfinite(b).all()
    # Flattened per-level outputs line up with the runtime's anchors.
    from edgedet.runtime.anchors import generate_anchors

    assert sum(o.shape[1] * o.shape[2] * 9 for o in outs[:5]) == len(generate_anchors(cfg.image_size, cfg.anchor_config))


def test_heads_shared_with_per_level_bn_and_prior_bias(built):
    cfg, model = built
    for kind in ("class", "box"):
        for i in range(cfg.head_layers):
            for part in ("dw", "pw"):
                assert len(model.get_layer(f"{kind}_net_conv{i}_{part}")._inbound_nodes) == 5  # shared P3-P7
            bns = {model.get_layer(f"{kind}_net_bn{i}_p{l}") for l in LEVELS}
            assert len(bns) == 5  # separate BN per level
    bias = model.get_layer("class_net_predict_pw").get_weights()[1]
    assert bias.shape == (9 * cfg.num_classes,)
    np.testing.assert_allclose(bias, -math.log((1 - 0.01) / 0.01), rtol=1e-6)
    np.testing.assert_array_equal(model.get_layer("box_net_predict_pw").get_weights()[1], 0)


def test_only_standard_layers_plus_fusion(built):
    # QAT-readiness: tfmot knows every stock layer; WeightedFusion is the one custom layer.
    _, model = built
    custom = {type(l).__name__ for l in model.layers if not type(l).__module__.startswith("tf_keras")}
    assert custom == {"WeightedFusion"}
    for layer in model.layers:
        assert "get_config" in type(layer).__dict__ or type(layer).__module__.startswith("tf_keras")


def test_analytic_count_equals_graph(built):
    from edgedet.model import count_macs

    cfg, model = built
    c = count(cfg)
    assert c.params == model.count_params()
    assert c.trainable == sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert c.macs == count_macs(model)


# The D family (SE, swish, fast fusion) goes through every format; Lite through .h5 and SavedModel.
ROUND_TRIPS = {"test": ("keras", "h5", "savedmodel"), "test-lite": ("h5", "savedmodel")}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
def test_save_load_round_trip(built, tmp_path):
    import tf_keras as keras

    from edgedet.model import custom_objects

    cfg, model = built
    _randomise(model)
    x = np.random.default_rng(2).normal(size=(1, cfg.image_size, cfg.image_size, 3)).astype(np.float32)
    ref = [o.numpy() for o in model(x, training=False)]
    for fmt in ROUND_TRIPS[cfg.name]:
        if fmt == "savedmodel":
            # save_traces=False: the loader rebuilds every layer from get_config (and it is fast).
            path = tmp_path / "savedmodel"
            model.save(path, save_format="tf", save_traces=False)
        else:
            path = tmp_path / f"model.{fmt}"
            model.save(path)
        loaded = keras.models.load_model(path, custom_objects=custom_objects(), compile=False)
        assert loaded.output_names == model.output_names, fmt
        got = loaded(x, training=False)
        for a, b in zip(ref, got):
            np.testing.assert_array_equal(a, b.numpy(), err_msg=fmt)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lite0", "d0"])
def test_real_variants_build_and_match_analytic(name):
    import tf_keras as keras

    from edgedet.model import build_model, count_macs

    keras.backend.clear_session()
    cfg = get_config(name)
    model = build_model(cfg)
    c = count(cfg)
    assert (model.count_params(), count_macs(model)) == (c.params, c.macs)
    assert [tuple(o.shape[1:]) for o in model.outputs[:5]] == [(h, w, 810) for h, w in feature_sizes((cfg.image_size,) * 2)]
