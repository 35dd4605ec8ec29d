"""Variant table, overrides, bad input, published sizes and `edgedet info` (no TensorFlow needed)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgedet.errors import ConfigError
from edgedet.model.analytic import count
from edgedet.model.config import VARIANTS, get_config

# Published trainable-parameter counts (M) for 90 classes: EfficientDet paper / google/automl.
PUBLISHED_PARAMS = {
    "d0": 3.9, "d1": 6.6, "d2": 8.1, "d3": 12.0, "d4": 20.7, "d5": 33.7, "d6": 51.9, "d7": 51.9,
    "lite0": 3.2, "lite1": 4.2, "lite2": 5.3, "lite3": 8.4, "lite4": 15.1,
}
PUBLISHED_MACS = {"d0": 2.54e9, "d1": 6.10e9, "d2": 11.0e9}


def test_official_table():
    rows = {n: (c.image_size, c.fpn_width, c.fpn_layers, c.head_layers) for n, c in VARIANTS.items()}
    assert [rows[f"d{i}"] for i in range(8)] == [
        (512, 64, 3, 3), (640, 88, 4, 3), (768, 112, 5, 3), (896, 160, 6, 4),
        (1024, 224, 7, 4), (1280, 288, 7, 4), (1280, 384, 8, 5), (1536, 384, 8, 5),
    ]
    assert [rows[f"lite{i}"] for i in range(5)] == [
        (320, 64, 3, 3), (384, 88, 4, 3), (448, 112, 5, 3), (512, 160, 6, 4), (640, 224, 7, 4),
    ]
    assert VARIANTS["d7"].backbone == "efficientnet-b6"  # D7 reuses the D6 backbone (automl)
    assert [VARIANTS[f"lite{i}"].anchor_scale for i in range(5)] == [3.0, 3.0, 3.0, 4.0, 4.0]
    assert VARIANTS["d0"].anchor_scale == 4.0
    lite = VARIANTS["lite0"]
    assert (lite.activation, lite.fusion, lite.mean, lite.std) == ("relu6", "sum", (127.0,) * 3, (128.0,) * 3)
    d0 = VARIANTS["d0"]
    assert d0.activation == "swish" and d0.fusion == "fast"
    assert d0.mean == pytest.approx((123.675, 116.28, 103.53)) and d0.std == pytest.approx((58.395, 57.12, 57.375))
    assert VARIANTS["test"].fusion == "fast" and VARIANTS["test-lite"].fusion == "sum"
    tiny = VARIANTS["tiny"]  # the 5-minute synthetic benchmark's model: pretrained Lite0 backbone, small neck
    assert (tiny.backbone, tiny.image_size, tiny.fpn_width, tiny.fpn_layers, tiny.head_layers) == (
        "efficientnet-lite0", 128, 32, 2, 2) and tiny.is_lite and tiny.mean == lite.mean


def test_overrides_and_anchor_config():
    cfg = get_config("LITE0", num_classes=3, image_size=384)
    assert (cfg.name, cfg.num_classes, cfg.image_size) == ("lite0", 3, 384)
    assert VARIANTS["lite0"].num_classes == 90  # the table row is untouched
    assert cfg.anchor_config.anchor_scale == 3.0 and cfg.anchor_config.num_anchors == 9
    assert get_config("efficientdet-d0") is VARIANTS["d0"]
    assert _round_trips(cfg)
    with pytest.raises(Exception):
        cfg.num_classes = 5  # frozen


def _round_trips(cfg) -> bool:
    return type(cfg).from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"name": "d9"}, "did you mean 'd7'"),
        ({"name": "yolo"}, "valid: d0, d1"),
        ({"name": "d0", "image_size": 320}, "multiple of 128"),
        ({"name": "lite0", "image_size": 300}, "multiple of 64"),
        ({"name": "lite0", "image_size": 0}, "multiple of 64"),
        ({"name": "d0", "num_classes": 0}, "positive integer"),
    ],
)
def test_bad_input_is_one_line_config_error(kwargs, fragment):
    with pytest.raises(ConfigError) as exc:
        get_config(**kwargs)
    msg = str(exc.value)
    assert fragment in msg and "\n" not in msg


@pytest.mark.parametrize("name", list(PUBLISHED_PARAMS))
def test_params_match_published(name):
    c = count(get_config(name))
    assert c.trainable / 1e6 == pytest.approx(PUBLISHED_PARAMS[name], rel=0.02)


def test_d0_to_d6_match_automl_exactly():
    # Trainable + non-trainable counts of automl's Keras EfficientDet (fast fusion) as reported
    # by independent ports; ours equal them (D6 uses sum fusion here, as automl: 152 fusion weights fewer).
    automl = {"d0": (3880067, 47136), "d1": (6625898, 71456), "d2": (8097039, 81776),
              "d3": (12032296, 114304), "d4": (20723675, 167312), "d5": (33653315, 227392)}
    for name, (trainable, non_trainable) in automl.items():
        c = count(get_config(name))
        assert (c.trainable, c.non_trainable) == (trainable, non_trainable), name
    assert count(get_config("d6")).trainable == 51871934 - 152


@pytest.mark.parametrize("name", list(PUBLISHED_MACS))
def test_macs_match_published(name):
    assert count(get_config(name)).macs == pytest.approx(PUBLISHED_MACS[name], rel=0.05)


def test_info_cli_json_and_errors():
    from edgedet.cli import main

    r = subprocess.run([sys.executable, "-m", "edgedet", "info", "d0", "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["macs"] == pytest.approx(2.54e9, rel=0.05)
    assert d["trainable_params"] == 3880067 and d["anchors"] == 49104 and d["image_size"] == 512
    assert (d["fpn_width"], d["fpn_layers"], d["head_layers"]) == (64, 3, 3)
    r = subprocess.run([sys.executable, "-m", "edgedet", "info", "lite9"], capture_output=True, text=True)
    assert r.returncode == 2 and "lite0" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert main(["info", "lite0", "--num-classes", "3", "--image-size", "384"]) == 0
    assert main(["info"]) == 0


def test_config_and_info_are_tensorflow_free():
    code = (
        "import sys, edgedet.model, edgedet.model.cli, edgedet.model.analytic, edgedet.model.bifpn;"
        "edgedet.model.cli.info_dict('d3');"
        "sys.exit(int(any(m in sys.modules for m in ('tensorflow', 'tf_keras', 'keras'))))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
