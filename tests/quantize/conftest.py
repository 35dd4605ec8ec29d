"""Fixtures for the quantize tests: a tiny synthetic dataset and tiny float runs of both families.

The tiny runs are made to behave like trained ones by ``tests/realistic.py``.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))  # --import-mode=importlib adds no test folder itself
from realistic import make_realistic  # noqa: E402

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SIZE = 128
FAMILIES = {"d": "test", "lite": "test-lite"}  # swish+SE+fast fusion / relu6+sum fusion


@pytest.fixture(scope="session")
def synth(tmp_path_factory) -> Path:
    """16 synthetic 128 px images (12 train / 2 val / 2 test), 6 classes."""
    from edgedet.train.synth import write_synth

    out = tmp_path_factory.mktemp("qsynth") / "synth"
    write_synth(out, num_images=16, image_size=SIZE, seed=0)
    return out


def synth_images(root: Path, size: int = SIZE, n: int = 8, split: str = "train", mean=(127.0,) * 3,
                 std=(128.0,) * 3) -> np.ndarray:
    """``(n, S, S, 3)`` float32 normalised images of one synthetic split."""
    from edgedet.runtime.preprocess import letterbox, load_image, normalize

    files = sorted((Path(root) / split).glob("*.jpg"))[:n]
    return np.stack([normalize(letterbox(load_image(f), (size, size), mean)[0], mean, std) for f in files]).astype(np.float32)


def build_realistic(variant: str, root: Path, num_classes: int = 6, seed: int = 0):
    import tf_keras as keras

    from edgedet.model import build_model, get_config

    keras.utils.set_random_seed(seed)
    cfg = get_config(variant, num_classes=num_classes, image_size=SIZE)
    model = build_model(cfg)
    make_realistic(model, synth_images(root, SIZE, mean=cfg.mean, std=cfg.std), np.random.default_rng(seed))
    return model, cfg


def make_run(out: Path, model, cfg, class_names, dataset: Path, kind: str = "float") -> Path:
    """A run folder (run.json + best.weights.h5) laid out the way ``edgedet train`` writes it."""
    from edgedet import runs as ck

    out.mkdir(parents=True, exist_ok=True)
    ck.save_weights(model, out / ck.BEST)
    data = {
        "kind": kind, "variant": cfg.name, "image_size": cfg.image_size, "num_classes": cfg.num_classes,
        "class_names": list(class_names), "mean": list(cfg.mean), "std": list(cfg.std),
        "model_config": cfg.to_dict(), "dataset": str(dataset), "epochs": 1, "epochs_done": 1, "status": "done",
        "best": {"epoch": 1, "metrics": {"AP": 0.1}}, "weights": {"best": ck.BEST},
        "train": {"data": str(dataset), "out": str(out), "model": cfg.name, "batch": 4, "epochs": 1, "seed": 0,
                  "backbone_weights": None, "progress": False, "eval_every": 1},
        "weights_sha256": ck.sha256_file(out / ck.BEST),
    }
    (out / ck.RUN_JSON).write_text(json.dumps(data, indent=2))
    return out


@pytest.fixture(scope="session")
def float_run(tmp_path_factory, synth) -> Path:
    """A float run of the D-family ``test`` row (swish, SE, fast fusion) on the synthetic data."""
    from edgedet.train.synth import CLASSES

    model, cfg = build_realistic("test", synth)
    return make_run(tmp_path_factory.mktemp("qrun") / "run", model, cfg, CLASSES, synth)


@pytest.fixture(scope="session")
def qhelpers():
    """The helpers above for test modules (conftest is not importable under --import-mode=importlib)."""
    from types import SimpleNamespace

    return SimpleNamespace(FAMILIES=FAMILIES, SIZE=SIZE, synth_images=synth_images, make_realistic=make_realistic,
                           build_realistic=build_realistic, make_run=make_run)
