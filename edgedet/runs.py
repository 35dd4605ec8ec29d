"""Run directories: run.json, weights, resumable training state — all written atomically.

Layout of a run folder ``RUN``::

    run.json            what the run is (variant, size, classes, mean/std, kind, metrics, dataset)
    best.weights.h5     EMA weights with the best val AP (what ``load_run`` returns)
    last.weights.h5     EMA weights after the last finished epoch
    state.npz           live weights + optimizer slots + EMA shadow + counters (for --resume)
    log.csv             one row per finished epoch
    tb/                 TensorBoard event files

Every stage reads and writes run folders through this module. Every file is written atomically
(:mod:`edgedet.files`), so a SIGKILL leaves either the old or the new file, never half of one.
Nothing here imports a stage at module level; :func:`load_run` builds the model lazily.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgedet.errors import ModelFileError
from edgedet.files import atomic_path, sha256_file

RUN_JSON = "run.json"
BEST = "best.weights.h5"
LAST = "last.weights.h5"
STATE = "state.npz"
# Set in the environment of the commands `edgedet pipeline` runs: a stage leaves out the
# "next, run ..." hints it prints on its own, since the pipeline runs the next stage itself.
IN_PIPELINE_ENV = "EDGEDET_IN_PIPELINE"


def save_weights(model, path) -> None:
    """``model.save_weights`` in HDF5, atomically."""
    with atomic_path(path) as tmp:  # the temporary keeps the .h5 suffix Keras keys on
        model.save_weights(str(tmp))


def save_state(path, arrays: dict[str, list[np.ndarray]], meta: dict) -> None:
    """Training state -> one ``.npz`` (atomic). ``arrays``: named lists of arrays; ``meta``: JSON-able."""
    flat = {"__meta__": np.frombuffer(json.dumps(meta).encode(), np.uint8)}
    for key, values in arrays.items():
        flat[f"{key}/__len__"] = np.array(len(values))
        for i, v in enumerate(values):
            flat[f"{key}/{i}"] = np.asarray(v)
    with atomic_path(path) as tmp:
        np.savez(tmp, **flat)


def load_state(path) -> tuple[dict[str, list[np.ndarray]], dict]:
    """Inverse of :func:`save_state`."""
    try:
        with np.load(path) as z:
            meta = json.loads(bytes(z["__meta__"]).decode())
            arrays = {}
            for key in z.files:
                if key.endswith("/__len__"):
                    name = key[: -len("/__len__")]
                    arrays[name] = [z[f"{name}/{i}"] for i in range(int(z[key]))]
    except (OSError, ValueError, KeyError) as exc:
        raise ModelFileError(f"{path}: unreadable training state ({exc})") from exc
    return arrays, meta


@dataclass
class RunInfo:
    """What :func:`load_run` knows about a run.

    Attributes:
        run_dir: the run folder.
        config: the :class:`edgedet.model.config.ModelConfig`.
        class_names: class names, index = class id.
        metrics: best val metrics (AP, AP50, ...), possibly empty.
        kind: "float" or "qat".
        weights_path: the weights file loaded.
        weights_sha256: its sha256.
        data: run.json as a dict.
    """

    run_dir: Path
    config: object
    class_names: list[str]
    metrics: dict = field(default_factory=dict)
    kind: str = "float"
    weights_path: Path | None = None
    weights_sha256: str = ""
    data: dict = field(default_factory=dict)


def is_run_dir(path) -> bool:
    """A folder holding a run.json (a training or QAT run)."""
    return Path(path).is_dir() and (Path(path) / RUN_JSON).is_file()


def read_run_json(run_dir) -> dict:
    run_dir = Path(run_dir)
    path = run_dir / RUN_JSON
    if not run_dir.is_dir():
        raise ModelFileError(f"{run_dir}: no such run folder")
    if not path.is_file():
        raise ModelFileError(f"{path}: missing (not a training run folder, or training never finished an epoch)")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: unreadable run.json ({exc})") from exc


def load_run(run_dir, which: str = "best"):
    """Rebuild a run's model with its best (or last) weights.

    Args:
        run_dir: a folder written by ``edgedet train`` (or QAT, kind "qat").
        which: "best" or "last".

    Returns:
        ``(model, RunInfo)``; the model is a tf_keras Functional model taking normalised input.
    """
    run_dir = Path(run_dir)
    data = read_run_json(run_dir)
    if data.get("kind", "float") == "qat":
        from edgedet.quantize.qat import load_qat_model

        return load_qat_model(run_dir, which=which)
    from edgedet.model import build_model
    from edgedet.model.config import ModelConfig

    try:
        cfg = ModelConfig.from_dict(data["model_config"])
    except (KeyError, TypeError) as exc:
        raise ModelFileError(f"{run_dir / RUN_JSON}: no valid model_config ({exc})") from exc
    weights = run_dir / (data.get("weights", {}).get(which) or (BEST if which == "best" else LAST))
    if not weights.is_file():
        raise ModelFileError(f"{weights}: weights file missing")
    model = build_model(cfg)
    try:
        model.load_weights(str(weights))
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{weights}: cannot load weights ({exc})") from exc
    info = RunInfo(run_dir=run_dir, config=cfg, class_names=list(data.get("class_names", [])),
                   metrics=dict(data.get("best", {}).get("metrics", {})), kind=data.get("kind", "float"),
                   weights_path=weights, weights_sha256=sha256_file(weights), data=data)
    return model, info
