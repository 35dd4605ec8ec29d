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


# --- running in parallel (pytest-xdist, `-n 2 --dist loadgroup`) ---------------------------
# The convert/, quantize/ and runtime/ folders share session-scoped fixtures (tiny trained runs,
# exported files) that cost minutes to build, so each folder stays on one worker; every other
# file is its own group. Slow groups go first so the two workers finish close together.
_SHARED_FIXTURE_DIRS = {"convert", "quantize", "runtime"}
_OWN_GROUP_FILES = {"test_qat_big.py"}  # slow, and needs none of its folder's fixtures
_SLOW_FIRST = ["test_pipeline.py", "quantize", "convert", "train/test_trainer.py", "train/test_resume.py",
               "runtime", "test_qat_big.py"]


def _group_of(item) -> str:
    rel = Path(str(item.fspath)).resolve().relative_to(Path(__file__).resolve().parent)
    if rel.parts[0] in _SHARED_FIXTURE_DIRS and rel.name not in _OWN_GROUP_FILES:
        return rel.parts[0]
    return rel.as_posix()


def pytest_collection_modifyitems(config, items):
    def rank(item):
        group = _group_of(item)
        hits = [i for i, key in enumerate(_SLOW_FIRST) if group == key or group.endswith(key)]
        return hits[0] if hits else len(_SLOW_FIRST)

    for item in items:
        item.add_marker(pytest.mark.xdist_group(_group_of(item)))
    items.sort(key=rank)  # stable: the order inside a group is kept
