"""Synthetic dataset: deterministic bytes, loads as COCO, passes the checker, boxes are the shapes."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgedet.cli import main
from edgedet.errors import DataError
from edgedet.train.check import check_dataset
from edgedet.train.datasets import load_dataset
from edgedet.train.synth import CLASSES, MAX_SIZE, MIN_SIZE, ensure_synth, render_image, split_counts, write_synth


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "ds"
    write_synth(out, num_images=24, image_size=128, seed=3)
    return out


def test_same_seed_same_bytes(synth, tmp_path):
    again = tmp_path / "again"
    write_synth(again, num_images=24, image_size=128, seed=3)
    assert _digest(again) == _digest(synth)
    other = tmp_path / "other"
    write_synth(other, num_images=24, image_size=128, seed=4)
    a, b = _digest(other), _digest(synth)
    assert a.keys() == b.keys() and a["train/000000.jpg"] != b["train/000000.jpg"]
    # each image has its own stream: more images leave the first ones unchanged
    more = tmp_path / "more"
    write_synth(more, num_images=40, image_size=128, seed=3)
    assert _digest(more)["val/000000.jpg"] == b["val/000000.jpg"]
    # worker processes do not change a byte
    par = tmp_path / "par"
    write_synth(par, num_images=24, image_size=128, seed=3, workers=2)
    assert _digest(par) == b


def test_layout_loads_and_checks_clean(synth):
    assert sorted(p.name for p in (synth / "annotations").iterdir()) == [
        "instances_test.json", "instances_train.json", "instances_val.json"]
    ds = load_dataset(synth)
    assert ds.source_format == "coco" and ds.class_names == list(CLASSES)
    assert {k: len(v) for k, v in ds.splits.items()} == split_counts(24) == {"train": 18, "val": 3, "test": 3}
    clean, issues = check_dataset(ds, "strict")
    assert issues == []
    boxes = np.concatenate([s.boxes for s in ds.samples()])
    side = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])) / 128
    # the tight box of the rasterised shape is within a pixel or two of the requested size
    assert side.min() >= MIN_SIZE - 2 / 128 and side.max() <= MAX_SIZE + 2 / 128
    assert len({int(c) for s in ds.samples() for c in s.classes}) >= 4
    meta = json.loads((synth / "synth.json").read_text())
    assert meta["seed"] == 3 and meta["classes"] == list(CLASSES)
    assert sum(v["boxes"] for v in meta["splits"].values()) == len(boxes)


def test_render_image_shapes_and_ranges():
    for i in range(5):
        img, boxes, classes = render_image(np.random.default_rng([0, 0, i]), 160)
        assert img.shape == (160, 160, 3) and img.dtype == np.uint8
        assert boxes.dtype == np.float32 and classes.dtype == np.int32
        assert boxes.shape == (len(classes), 4) and len(classes) >= 1
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 160).all()
        assert ((boxes[:, 2:] - boxes[:, :2]) >= 0.05 * 160).all()
        assert ((classes >= 0) & (classes < len(CLASSES))).all()
        assert img.std() > 10  # not a blank canvas


def test_overwrite_and_ensure(synth, tmp_path):
    with pytest.raises(DataError, match="already exists"):
        write_synth(synth, num_images=24, image_size=128, seed=3)
    out = tmp_path / "cache"
    ensure_synth(out, num_images=6, image_size=64, seed=0)
    stamp = (out / "synth.json").stat().st_mtime_ns
    ensure_synth(out, num_images=6, image_size=64, seed=0)  # reused, not rewritten
    assert (out / "synth.json").stat().st_mtime_ns == stamp
    ensure_synth(out, num_images=9, image_size=64, seed=0)  # other parameters: rewritten
    assert json.loads((out / "synth.json").read_text())["num_images"] == 9
    assert not list(tmp_path.glob(".cache.*"))  # no temp or old folders left behind
    with pytest.raises(DataError, match="at least 64"):
        write_synth(tmp_path / "small", num_images=6, image_size=32)


def test_cli(tmp_path, capsys):
    assert main(["data", "synth", str(tmp_path / "s"), "--num-images", "8", "--image-size", "96", "--seed", "1"]) == 0
    assert "train 6 images" in capsys.readouterr().out
    with Image.open(tmp_path / "s" / "train" / "000000.jpg") as im:
        assert im.size == (96, 96) and im.format == "JPEG"
    assert main(["data", "stats", str(tmp_path / "s")]) == 0
    assert "6 classes" in capsys.readouterr().out


def test_one_class_set(tmp_path, capsys):
    """`--classes circle`: every box is a circle, the dataset has that one class, and all six
    classes (the default) still give the bytes of a run without the option."""
    assert main(["data", "synth", str(tmp_path / "one"), "--num-images", "8", "--image-size", "96", "--classes", "circle"]) == 0
    assert "1 classes" in capsys.readouterr().out
    ds = load_dataset(str(tmp_path / "one"))
    assert ds.class_names == ["circle"]
    assert sum(len(s.boxes) for s in ds.samples()) > 0 and all((np.asarray(s.classes) == 0).all() for s in ds.samples())
    write_synth(tmp_path / "all", num_images=4, image_size=96, classes=CLASSES)
    write_synth(tmp_path / "default", num_images=4, image_size=96)
    for f in ("train/000000.jpg", "annotations/instances_train.json"):
        assert (tmp_path / "all" / f).read_bytes() == (tmp_path / "default" / f).read_bytes()
    with pytest.raises(DataError, match="--classes blob: choose distinct names from circle"):
        write_synth(tmp_path / "bad", num_images=4, image_size=96, classes=("blob",))
