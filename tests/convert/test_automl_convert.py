"""An imported automl checkpoint is an ordinary run: its TFLite, ONNX and OpenVINO files match its Keras model."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.shared]

SHARED = Path(os.environ.get("EDGEDET_SHARED", Path(__file__).resolve().parents[3] / "shared"))
LITE0 = SHARED / "reference" / "automl" / "efficientdet-lite0"
NAMES = [f"class_p{i}" for i in range(3, 8)] + [f"box_p{i}" for i in range(3, 8)]
SIZE = 128  # the checkpoint's weights at a smaller input: the same graph, quicker to convert


def test_imported_lite0_converts_to_matching_files(tmp_path, cv):
    if not (LITE0 / "model.index").is_file():
        pytest.skip(f"{LITE0} not present")
    from edgedet.convert.api import convert
    from edgedet.model.automl_import import coco_class_names, import_run
    from edgedet.runtime.metadata import read_metadata

    run = tmp_path / "run"
    import_run(str(LITE0), run, image_size=SIZE)
    targets = ["tflite-fp32", "onnx", "openvino-fp32"]
    arts, _ = convert(targets, weights=str(run), out_dir=str(tmp_path / "out"), log=lambda m: None)
    paths = {a.target: a.path for a in arts}
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.5, (1, SIZE, SIZE, 3)).astype(np.float32)
    ref = cv.keras_outputs(run, x)
    for target in targets:
        meta = read_metadata(paths[target])
        assert meta.labels == tuple(coco_class_names()) or list(meta.labels) == coco_class_names()
        assert tuple(meta.input_size) == (SIZE, SIZE) and meta.anchors["anchor_scale"] == 3.0
        for name, got, want in zip(NAMES, cv.run_raw(paths[target], x), ref):
            assert got.shape == want.shape, (target, name)
            rel = float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-12))
            assert rel <= 1e-4, (target, name, rel)
