"""Find the checkpoint behind ``automl:SPEC``: a folder, a ``.tgz``/``.tar.gz``, or an official name.

- A folder (the extracted archive, or any folder holding one checkpoint) is used in place.
- An archive is unpacked into the user cache (``~/.cache/edgedet/automl/``), checkpoint files only
  (``checkpoint``, ``*.index``, ``*.data-*``); links, absolute paths and ``..`` are refused and
  nothing else in it (``model.meta``, scripts) is extracted or run.
- ``efficientdet-d0`` ... ``-d7`` and ``efficientdet-lite0`` ... ``-lite4`` (each variant of ours
  with an official archive) are downloaded from google/automl's published address, only on this
  explicit request, with a progress bar, into the same cache. Google publishes no checksums for
  them: the sha256 of the first download is stored next to it (``<archive>.sha256``) and every
  later use verifies the file against it; :data:`PINNED_SHA256` entries, when set, are verified
  from the first download on.
"""
from __future__ import annotations

import os
import sys
import tarfile
from pathlib import Path

from edgedet.errors import ModelFileError
from edgedet.files import atomic_write_bytes, sha256_file

_COCO2 = "https://storage.googleapis.com/cloud-tpu-checkpoints/efficientdet/coco2/efficientdet-d{}.tar.gz"
_LITE = "https://storage.googleapis.com/cloud-tpu-checkpoints/efficientdet/coco/efficientdet-lite{}.tgz"
OFFICIAL = {**{f"efficientdet-d{i}": _COCO2.format(i) for i in range(8)},
            **{f"efficientdet-lite{i}": _LITE.format(i) for i in range(5)}}
# sha256 of the official archives, verified from the first download on when set.
PINNED_SHA256: dict[str, str] = {}


def _is_checkpoint_file(basename: str) -> bool:
    return basename == "checkpoint" or basename.endswith(".index") or ".data-" in basename


def cache_dir() -> Path:
    """``$EDGEDET_CACHE`` or ``$XDG_CACHE_HOME/edgedet`` (default ``~/.cache/edgedet``)."""
    if os.environ.get("EDGEDET_CACHE"):
        return Path(os.environ["EDGEDET_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgedet"


def resolve(spec: str, log=None) -> tuple[Path, str]:
    """``automl:SPEC`` -> ``(checkpoint prefix, name hint)``.

    The hint (folder or archive name, e.g. ``efficientdet-d7``) tells D6 from D7, which no
    variable does.
    """
    spec = spec[len("automl:"):] if spec.startswith("automl:") else spec
    path = Path(spec).expanduser()
    if not path.exists() and spec.lower() in OFFICIAL:
        path = download(spec.lower(), log=log)
    if path.is_file() and path.name.endswith((".tgz", ".tar.gz", ".tar")):
        folder = extract(path)
        return find_prefix(folder, str(path)), path.name
    if path.is_dir():
        return find_prefix(path, str(path)), path.resolve().name
    if Path(str(path) + ".index").is_file():
        return path, path.resolve().parent.name
    if path.is_file() and (path.suffix == ".index" or ".data-" in path.name):  # a file of the checkpoint
        raise ModelFileError(f"{spec}: a file of a checkpoint; give its folder ({path.parent}) "
                             f"or its prefix ({path.parent / path.name.split('.')[0]})")
    known = ", ".join(OFFICIAL)
    raise ModelFileError(f"{spec}: no such checkpoint folder or .tgz/.tar.gz archive (official names: {known})")


def find_prefix(folder: Path, shown: str) -> Path:
    """The one checkpoint prefix in ``folder`` or in its only sub-folder that holds one."""
    import tensorflow as tf

    def prefix_in(d: Path) -> Path | None:
        latest = tf.train.latest_checkpoint(str(d))
        if latest and Path(latest + ".index").is_file():
            return Path(latest)
        indexes = sorted(d.glob("*.index"))
        return indexes[0].with_suffix("") if len(indexes) == 1 else None

    own = prefix_in(folder)
    if own is not None:
        return own
    found = [(d, p) for d in sorted(q for q in folder.iterdir() if q.is_dir()) if (p := prefix_in(d)) is not None]
    if len(found) > 1:  # e.g. a folder of several downloaded checkpoints: which one is meant?
        raise ModelFileError(f"{shown}: holds {len(found)} checkpoints ({', '.join(d.name for d, _ in found)}); "
                             "point at one of their folders")
    if found:
        return found[0][1]
    raise ModelFileError(f"{shown}: holds no TensorFlow checkpoint (no 'checkpoint' file or *.index)")


def extract(archive: Path) -> Path:
    """Unpack the checkpoint files of ``archive`` into the cache (once per archive content)."""
    digest = sha256_file(archive)[:16]
    stem = archive.name.split(".")[0]
    out = cache_dir() / "automl" / f"{stem}-{digest}"
    if (out / ".complete").is_file():
        return out
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                name = member.name
                if not member.isfile() or not _is_checkpoint_file(Path(name).name):
                    continue
                if Path(name).is_absolute() or ".." in Path(name).parts:
                    raise ModelFileError(f"{archive}: unsafe path {name!r} in the archive")
                target = tmp / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ModelFileError(f"{archive}: not a readable .tar.gz/.tgz archive ({exc})") from None
    (tmp / ".complete").write_text(archive.name + "\n")
    if out.exists():  # another process finished first
        return out
    os.replace(tmp, out)
    return out


def download(name: str, log=None) -> Path:
    """The official archive ``name`` in the cache, downloaded now if absent; checksum verified."""
    url = OFFICIAL[name]
    dest = cache_dir() / "automl" / url.rsplit("/", 1)[1]
    stored = dest.with_name(dest.name + ".sha256")
    if not dest.is_file():
        _fetch(url, dest, log or (lambda m: print(m, file=sys.stderr, flush=True)))
    digest = sha256_file(dest)
    expected = PINNED_SHA256.get(name) or (stored.read_text().split()[0] if stored.is_file() else None)
    if expected and digest != expected:
        raise ModelFileError(f"{dest}: sha256 {digest[:16]}.. differs from the expected {expected[:16]}.. "
                             f"(corrupt or replaced; delete it to download again from {url})")
    if not stored.is_file():
        atomic_write_bytes(stored, f"{digest}  {dest.name}\n".encode())
    return dest


def _fetch(url: str, dest: Path, log) -> None:
    import urllib.error
    import urllib.request

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + f".part{os.getpid()}")
    log(f"downloading {url} -> {dest}")
    try:
        with urllib.request.urlopen(url, timeout=30) as resp, open(tmp, "wb") as f:
            total = int(resp.headers.get("Content-Length") or 0)
            done = 0
            while chunk := resp.read(1 << 20):
                f.write(chunk)
                done += len(chunk)
                _progress(done, total)
        print(file=sys.stderr)
    except (urllib.error.URLError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise ModelFileError(f"cannot download {url} ({reason}); fetch it by hand and give its path: "
                             f"edgedet import automl PATH/{dest.name}, or train --init automl:PATH/{dest.name}") from None
    os.replace(tmp, dest)


def _progress(done: int, total: int) -> None:
    if total:
        n = int(30 * done / total)
        print(f"\r[{'#' * n}{'.' * (30 - n)}] {done / 2**20:6.1f}/{total / 2**20:.1f} MiB", end="",
              file=sys.stderr, flush=True)
    else:
        print(f"\r{done / 2**20:6.1f} MiB", end="", file=sys.stderr, flush=True)
