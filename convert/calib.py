"""Calibration images for post-training quantization (``--calib-data``).

``--calib-data`` is a dataset the trainer can read (its *train* split is used: calibrating on
test images would leak them into the reported accuracy), a folder of images (searched
recursively) or a ``.txt`` file listing image paths. A seeded sample of ``count`` images is
pre-processed exactly like the runtime does it (letterbox, mean padding, ``(x - mean) / std``).

The calibration set's identity is its sha256 over the chosen files' names and bytes, stored
in every artifact's metadata (``calib_sha256``).
"""
from __future__ import annotations

import hashlib
import os
import random
from typing import Iterator

import numpy as np

from edgedet.errors import DataError

DEFAULT_COUNT = 300
MIN_RECOMMENDED = 100


def _list_folder(root: str) -> list[str]:
    from edgedet.runtime.preprocess import is_image_file

    out = []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        out.extend(os.path.join(d, f) for f in sorted(files) if is_image_file(f))
    return out


def _dataset_images(path: str) -> list[str] | None:
    """Train-split image paths when ``path`` is a dataset the trainer reads, else None."""
    try:
        from edgedet.train.datasets import load_dataset
    except ImportError:
        return None
    try:
        ds = load_dataset(path)
    except Exception:  # noqa: BLE001 - not a dataset: fall back to "folder of images"
        return None
    samples = ds.splits.get("train") or [s for v in ds.splits.values() for s in v]
    return [str(s.image_path) for s in samples]


def list_images(path: str) -> list[str]:
    """All candidate calibration images under ``path`` (sorted, deterministic).

    Raises:
        DataError: path missing or without images.
    """
    if not os.path.exists(path):
        raise DataError(f"--calib-data {path}: no such file or folder")
    if os.path.isfile(path):
        if path.endswith(".txt"):
            base = os.path.dirname(path)
            with open(path) as f:
                files = [ln.strip() for ln in f if ln.strip()]
            files = [p if os.path.isabs(p) else os.path.join(base, p) for p in files]
        else:
            files = [path]
    else:
        files = _dataset_images(path) or _list_folder(path)
    if not files:
        raise DataError(f"--calib-data {path}: no images found (give a dataset, an image folder or a .txt list)")
    return files


class Calibration:
    """A seeded, pre-processed calibration set.

    Args:
        path: ``--calib-data`` value.
        input_size: ``(h, w)`` of the network input.
        mean, std: normalisation in pixel units.
        count: images to use (all if fewer exist).
        seed: sampling seed.
        layout: "NHWC" or "NCHW" for the arrays yielded.
    """

    def __init__(self, path: str, input_size, mean, std, count: int = DEFAULT_COUNT, seed: int = 0, layout: str = "NHWC"):
        files = list_images(path)
        if len(files) > count:
            files = sorted(random.Random(seed).sample(files, count))
        self.path, self.files = path, files
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.mean, self.std, self.layout = tuple(mean), tuple(std), layout
        self.seed = seed
        self._canvases: list[np.ndarray] | None = None
        self._sha: str | None = None

    def __len__(self) -> int:
        return len(self.files)

    @property
    def sha256(self) -> str:
        """sha256 over (relative name, bytes) of every chosen image, in order."""
        if self._sha is None:
            h = hashlib.sha256()
            for f in self.files:
                h.update(os.path.basename(f).encode() + b"\0")
                with open(f, "rb") as fh:
                    h.update(hashlib.sha256(fh.read()).digest())
            self._sha = h.hexdigest()
        return self._sha

    def canvases(self) -> list[np.ndarray]:
        """Letterboxed uint8 ``(h, w, 3)`` images (cached: ~0.3 MB each at 320 px)."""
        if self._canvases is None:
            from edgedet.runtime.preprocess import letterbox, load_image

            try:
                from tqdm import tqdm

                it = tqdm(self.files, desc="calibration images", unit="img", leave=False, disable=None)
            except ImportError:  # pragma: no cover
                it = self.files
            self._canvases = [letterbox(load_image(f), self.input_size, self.mean)[0] for f in it]
        return self._canvases

    def arrays(self) -> Iterator[np.ndarray]:
        """Normalised float32 ``(1, h, w, 3)`` (or ``(1, 3, h, w)``) arrays, one per image."""
        from edgedet.runtime.preprocess import normalize

        for c in self.canvases():
            x = normalize(c, self.mean, self.std)[None]
            yield np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if self.layout == "NCHW" else x

    def describe(self) -> dict:
        return {"path": os.path.abspath(self.path), "images": len(self), "seed": self.seed, "sha256": self.sha256}
