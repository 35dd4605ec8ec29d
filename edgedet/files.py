"""Files every stage writes or reads: atomic writes, hashes, sizes and the kind of a model file.

Numpy-free and import-light: the on-device runtime uses it as much as training does.

Atomic writes go to a temporary name in the destination folder, are flushed and fsync'ed, moved onto
the final name with ``os.replace`` and the folder is fsync'ed, so a kill or a power cut leaves
either the old file or the new one, never half of one.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path

from edgedet.errors import ModelFileError

MODEL_SUFFIXES = {".tflite": "tflite", ".onnx": "onnx", ".xml": "openvino"}


def model_kind(path) -> str:
    """``"tflite"``, ``"onnx"`` or ``"openvino"`` (an ``.xml``, or a folder holding one) from a model path.

    Raises:
        ModelFileError: any other suffix, or a folder without an ``.xml`` (a training run folder
            is named as one, since exporting it is what the user needs to do).
    """
    p = os.fspath(path).rstrip("/")
    kind = MODEL_SUFFIXES.get(os.path.splitext(p)[1].lower())
    if kind:
        return kind
    if os.path.isdir(p):
        try:
            names = os.listdir(p)
        except OSError as exc:
            raise ModelFileError(f"{path}: cannot read this folder ({exc.strerror})") from exc
        if any(n.endswith(".xml") for n in names):
            return "openvino"
        if "run.json" in names:
            raise ModelFileError(f"{path}: a training run folder, not an exported model: "
                                 f"export it with edgedet convert --weights {path} --target ...")
        raise ModelFileError(f"{path}: not a model (an OpenVINO model is a folder with an .xml and .bin)")
    raise ModelFileError(f"{path}: unknown model suffix (expected .tflite, .onnx, .xml or an OpenVINO folder)")


def fsync_dir(folder) -> None:
    """Make a rename inside ``folder`` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(os.fspath(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_path(path: Path) -> None:
    if path.is_dir():
        for root, _, files in os.walk(path):
            for f in files:
                with open(os.path.join(root, f), "rb") as fh:
                    os.fsync(fh.fileno())
        return
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def install(tmp, final) -> None:
    """Move a finished temporary file or folder onto ``final`` atomically, durably.

    A folder (an OpenVINO model, a dataset) is swapped in: the old one is moved aside first and
    removed after, so a reader sees the old or the new folder, never a mix.
    """
    tmp, final = Path(tmp), Path(final)
    _fsync_path(tmp)
    if tmp.is_dir():
        old = final.with_name(f".{final.name}.old{os.getpid()}")
        if os.path.lexists(final):
            os.replace(final, old)
        os.replace(tmp, final)
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        elif os.path.lexists(old):
            old.unlink()
    else:
        os.replace(tmp, final)
    fsync_dir(final.parent)


def temp_name(path, keep_suffix: bool = True) -> Path:
    """A temporary sibling of ``path`` (same folder, so the final rename is atomic), keeping its suffix."""
    path = Path(path)
    suffix = "".join(path.suffixes) if keep_suffix else ""
    return path.with_name(f".{path.name[: len(path.name) - len(suffix)]}.tmp{os.getpid()}{suffix}")


def sweep_stale_temps(folder) -> list[Path]:
    """Remove the temporaries (:func:`temp_name`) that a killed process of this machine left in
    ``folder``; those of a live process are its work in progress and stay. Returns the removed."""
    gone = []
    for p in Path(folder).glob(".*.tmp*"):
        pid = p.name.rsplit(".tmp", 1)[1].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # still running
        except ProcessLookupError:
            pass
        except (PermissionError, OSError):
            continue  # another user's live process, or no way to tell
        discard(p)
        gone.append(p)
    return gone


def discard(tmp) -> None:
    """Remove a temporary file or folder if it exists."""
    tmp = Path(tmp)
    if tmp.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
    elif os.path.lexists(tmp):
        tmp.unlink()


@contextlib.contextmanager
def atomic_path(path, keep_suffix: bool = True):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` (see :func:`install`).

    For writers that want a file name (``model.save_weights``, ``np.savez``, converters). The
    temporary name keeps the suffix (Keras and numpy key on it). On an exception the temporary is
    removed and ``path`` is left as it was.
    """
    tmp = temp_name(path, keep_suffix)
    try:
        yield tmp
        install(tmp, path)
    finally:
        discard(tmp)


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_size(path) -> int | None:
    """Bytes on disk: an OpenVINO ``.xml`` counts its ``.bin``; a folder counts its files; None if missing."""
    p = os.fspath(path)
    try:
        if os.path.isdir(p):
            return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(p) for f in fs)
        size = os.path.getsize(p)
        if p.endswith(".xml") and os.path.exists(p[:-4] + ".bin"):
            size += os.path.getsize(p[:-4] + ".bin")
        return size
    except OSError:
        return None


def fmt_size(n: int | None) -> str:
    """``5.30 MB`` / ``812.4 kB`` (decimal units, as file managers and model zoos print them); ``-`` for None."""
    if n is None:
        return "-"
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"
