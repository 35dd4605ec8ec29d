"""Input quantisation plans and output binding (no model files needed)."""
from __future__ import annotations

import numpy as np
import pytest

from edgedet.errors import ModelFileError
from edgedet.runtime.anchors import feature_sizes
from edgedet.runtime.backends.base import TensorSpec
from edgedet.runtime.metadata import ModelMeta
from edgedet.runtime.outputs import InputPlan, map_nms_outputs, map_raw_outputs


def _meta(**kw):
    return ModelMeta(labels=["a", "b", "c"], input_size=(128, 128), **kw)


def test_uint8_input_identity_fast_path():
    spec = TensorSpec("images", (1, 128, 128, 3), np.dtype(np.uint8), quant=(1 / 128, 127))
    plan = InputPlan(spec, _meta(mean=(127, 127, 127), std=(128, 128, 128)))
    assert plan.identity
    canvas = np.random.default_rng(0).integers(0, 256, (1, 128, 128, 3), dtype=np.uint8)
    assert plan.prepare(canvas) is canvas or np.array_equal(plan.prepare(canvas), canvas)


def test_int8_input_of_pixels_minus_128_is_one_xor():
    """A uint8-input Lite file whose input QUANTIZE the CPU backend dropped takes int8 pixels - 128."""
    spec = TensorSpec("images", (1, 128, 128, 3), np.dtype(np.int8), quant=(1 / 128, -1))
    plan = InputPlan(spec, _meta(mean=(127, 127, 127), std=(128, 128, 128)))
    assert plan.flip and not plan.identity
    canvas = np.random.default_rng(0).integers(0, 256, (1, 128, 128, 3), dtype=np.uint8)
    got = plan.prepare(canvas)
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, np.take(plan.lut[0], canvas))
    np.testing.assert_array_equal(got.astype(np.int16) + 128, canvas)


@pytest.mark.parametrize("dtype,quant", [(np.uint8, (0.0187, 114)), (np.int8, (0.0187, -14))])
def test_quantised_input_lut_matches_formula(dtype, quant):
    mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    plan = InputPlan(TensorSpec("x", (1, 128, 128, 3), np.dtype(dtype), quant=quant), _meta(mean=mean, std=std))
    assert not plan.identity and not plan.flip
    canvas = np.random.default_rng(1).integers(0, 256, (1, 128, 128, 3), dtype=np.uint8)
    got = plan.prepare(canvas)
    info = np.iinfo(dtype)
    want = np.clip(np.round((canvas - np.array(mean)) / np.array(std) / quant[0] + quant[1]), info.min, info.max).astype(dtype)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("table", [np.arange(256, dtype=np.uint8)[::-1], (np.arange(256) - 128).astype(np.int8),
                                   ((np.arange(256) - 127) / 128).astype(np.float32),
                                   np.random.default_rng(4).normal(0, 1, (3, 256)).astype(np.float32)])
def test_table_gather_is_the_same_with_and_without_opencv(monkeypatch, table):
    """The input tables run on OpenCV's LUT when it is installed and on numpy's take otherwise."""
    from edgedet.runtime import preprocess
    from edgedet.runtime.outputs import _gather

    canvas = np.random.default_rng(5).integers(0, 256, (2, 40, 24, 3), dtype=np.uint8)
    want = np.stack([table[c][canvas[..., c]] for c in range(3)], -1) if table.ndim == 2 else table[canvas]
    got = _gather(table, canvas)
    monkeypatch.setattr(preprocess, "_CV2", [None])
    plain = _gather(table, canvas)
    assert got.dtype == plain.dtype == table.dtype and got.shape == canvas.shape
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(plain, want)


def test_float_and_nchw_inputs():
    mean, std = (10, 20, 30), (2, 4, 8)
    canvas = np.random.default_rng(2).integers(0, 256, (1, 128, 128, 3), dtype=np.uint8)
    want = (canvas - np.array(mean, np.float32)) / np.array(std, np.float32)
    nhwc = InputPlan(TensorSpec("x", (1, 128, 128, 3), np.dtype(np.float32)), _meta(mean=mean, std=std)).prepare(canvas)
    np.testing.assert_allclose(nhwc, want, rtol=1e-6)
    # the per-channel table gives exactly the float32 arithmetic it replaces
    m32, s32 = np.array(mean, np.float32), np.array(std, np.float32)
    np.testing.assert_array_equal(nhwc, (canvas.astype(np.float32) - m32) * (np.float32(1.0) / s32))
    plan = InputPlan(TensorSpec("x", (-1, 3, 128, 128), np.dtype(np.float32)), _meta(mean=mean, std=std, layout="NCHW"))
    assert plan.nchw and plan.batch == -1 and plan.size == (128, 128)
    np.testing.assert_allclose(plan.prepare(canvas), want.transpose(0, 3, 1, 2), rtol=1e-6)
    raw = InputPlan(TensorSpec("x", (1, 64, 64, 3), np.dtype(np.uint8)), _meta(), raw_pixels=True)
    assert raw.identity and raw.size == (64, 64)


def _raw_specs(names, nchw=False, shuffle=False):
    specs = []
    levels = feature_sizes((128, 128))
    for kind, k in (("class", 27), ("box", 36)):
        for lv, (h, w) in zip(range(3, 8), levels):
            shape = (1, k, h, w) if nchw else (1, h, w, k)
            specs.append(TensorSpec(names(kind, lv), shape, np.dtype(np.float32)))
    if shuffle:
        specs = specs[::-1]
    return specs


def test_map_raw_outputs_by_name_and_by_shape():
    meta = _meta(output_names=[f"class_p{i}" for i in range(3, 8)] + [f"box_p{i}" for i in range(3, 8)])
    specs = _raw_specs(lambda k, lv: f"{k}_p{lv}", shuffle=True)
    r = map_raw_outputs(specs, meta, (128, 128))
    assert [specs[i].name for i in r.class_idx] == [f"class_p{i}" for i in range(3, 8)]
    assert [specs[i].name for i in r.box_idx] == [f"box_p{i}" for i in range(3, 8)]
    # TF-style names ("StatefulPartitionedCall:3") -> shapes decide, NCHW recognised
    specs = _raw_specs(lambda k, lv: f"StatefulPartitionedCall:{lv}{k}", nchw=True)
    r = map_raw_outputs(specs, meta, (128, 128))
    assert r.class_idx == [0, 1, 2, 3, 4] and r.box_idx == [5, 6, 7, 8, 9] and all(r.nchw)
    outs = [np.zeros(s.shape, np.float32) for s in specs]
    cls, box = r.split(outs)
    assert cls[0].shape == (16, 16, 27) and box[4].shape == (1, 1, 36)
    with pytest.raises(ModelFileError, match="outputs do not match"):
        map_raw_outputs(specs[:7], meta, (128, 128))


def test_map_nms_outputs():
    def spec(name, shape):
        return TensorSpec(name, shape, np.dtype(np.float32))

    std = [spec("TFLite_Detection_PostProcess", (1, 10, 4)), spec("TFLite_Detection_PostProcess:1", (1, 10)),
           spec("TFLite_Detection_PostProcess:2", (1, 10)), spec("TFLite_Detection_PostProcess:3", (1,))]
    assert map_nms_outputs(std) == (0, 1, 2, 3)
    named = [spec("detection_scores", (1, 10)), spec("detection_boxes", (1, 10, 4)), spec("num_detections", (1,)),
             spec("detection_classes", (1, 10))]
    assert map_nms_outputs(named) == (1, 3, 0, 2)
    with pytest.raises(ModelFileError, match="4 outputs"):
        map_nms_outputs(std[:3])
