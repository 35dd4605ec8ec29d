"""quantize_apply accepts the annotated Lite0 and D0. Building only."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("variant", ["lite0", "d0"])
def test_quantize_apply_accepts_full_size_variants(variant):
    import tf_keras as keras

    from edgedet.model import build_model, get_config
    from edgedet.quantize.qat_graph import quantize_model, unfolded_batchnorms

    keras.backend.clear_session()
    model = build_model(get_config(variant, num_classes=3))
    qat = quantize_model(model)
    assert {type(layer).__name__ for layer in qat.layers} <= {"InputLayer", "QuantizeLayer", "QuantizeWrapperV2"}
    assert unfolded_batchnorms(qat) == []
    assert len(qat.outputs) == 10 and qat.outputs[0].shape[-1] == 9 * 3
