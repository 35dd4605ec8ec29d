"""Shared fixtures. Tests read real data from ../shared and skip cleanly without it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEDET_SHARED", REPO.parent / "shared"))
BCCD = SHARED / "datasets" / "bccd"
IMAGENET = SHARED / "images" / "imagenet"


@pytest.fixture(scope="session")
def bccd() -> Path:
    if not (BCCD / "Annotations").is_dir():
        pytest.skip("../shared/datasets/bccd not present")
    return BCCD


@pytest.fixture(scope="session")
def imagenet_images() -> Path:
    if not IMAGENET.is_dir():
        pytest.skip("../shared/images/imagenet not present")
    return IMAGENET
