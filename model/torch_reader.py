"""Read a PyTorch ``.pth`` state dict into numpy WITHOUT torch and without executing the file.

A weights file is untrusted input: ``pickle`` would import and call whatever the file names.
:class:`_SafeUnpickler` admits only the names a plain tensor state dict uses
(``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2``/``_rebuild_tensor``/
``_rebuild_parameter`` and the ``torch.*Storage`` dtype markers), each mapped to a local
stand-in; any other global makes the file a :class:`ModelFileError`.

Both layouts are supported:
- legacy (``torch.save(..., _use_new_zipfile_serialization=False)``): a sequence of pickles
  (magic number, protocol version, sys info, the object, the storage-key list) followed by each
  storage as ``int64 numel`` + raw little-endian bytes;
- zip (torch >= 1.6): ``<root>/data.pkl`` plus one raw entry ``<root>/data/<key>`` per storage.
"""
from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgedet.errors import ModelFileError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclass(frozen=True)
class _StorageType:
    dtype: type


@dataclass
class _LazyTensor:
    """A tensor whose storage bytes are read after the pickle (legacy layout)."""

    key: str
    offset: int
    size: tuple
    stride: tuple


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, *args):
    key, _dtype = storage
    return _LazyTensor(str(key), int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _rebuild_tensor_v2(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves only tensor-rebuild names to local stand-ins."""

    def __init__(self, file, storages: dict):
        super().__init__(file)
        self._storages = storages  # key -> (dtype, numel)

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a weights file")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel[, view_metadata])
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError("unsupported persistent id")
        stype, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(stype, _StorageType):
            raise pickle.UnpicklingError("storage of unknown type")
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views are not supported")
        self._storages[key] = (stype.dtype, numel)
        return (key, stype.dtype)


def _check_extent(t: _LazyTensor, numel: int) -> None:
    """Refuse a view that would reach outside its storage of ``numel`` items: ``as_strided`` does
    no checking, so a negative offset or stride (or a size/stride count mismatch) read from a crafted
    file would otherwise read foreign memory."""
    if len(t.size) != len(t.stride):
        raise ValueError(f"tensor on storage {t.key}: {len(t.size)} sizes but {len(t.stride)} strides")
    if t.offset < 0 or any(s < 0 for s in t.size) or any(st < 0 for st in t.stride):
        raise ValueError(f"tensor on storage {t.key}: negative offset, size or stride "
                         f"(offset {t.offset}, size {t.size}, stride {t.stride})")
    if 0 in t.size:
        return
    if t.offset + 1 + sum((s - 1) * st for s, st in zip(t.size, t.stride)) > numel:
        raise ValueError(f"tensor exceeds its storage {t.key}")


def _materialise(obj, buffers: dict):
    if isinstance(obj, _LazyTensor):
        buf = buffers[obj.key]
        item = buf.itemsize
        _check_extent(obj, buf.size)
        arr = np.lib.stride_tricks.as_strided(
            buf[obj.offset:], shape=obj.size, strides=tuple(s * item for s in obj.stride)
        )
        return np.array(arr)  # own, contiguous copy
    if isinstance(obj, dict):
        return collections.OrderedDict((k, _materialise(v, buffers)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(v, buffers) for v in obj)
    return obj


def _load_legacy(f, storages: dict):
    magic = _SafeUnpickler(f, storages).load()
    if magic != LEGACY_MAGIC:
        raise ValueError("not a torch file (bad magic number)")
    _SafeUnpickler(f, storages).load()  # protocol version
    _SafeUnpickler(f, storages).load()  # sys info
    obj = _SafeUnpickler(f, storages).load()
    keys = _SafeUnpickler(f, storages).load()
    buffers = {}
    for key in keys:
        key = str(key)
        dtype, numel = storages[key]
        (n,) = struct.unpack("<q", f.read(8))
        if n != numel:
            raise ValueError(f"storage {key}: size {n} != {numel}")
        nbytes = n * np.dtype(dtype).itemsize
        data = f.read(nbytes)
        if len(data) != nbytes:
            raise ValueError("truncated storage data")
        buffers[key] = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<"))
    return _materialise(obj, buffers)


def _load_zip(path: Path, storages: dict):
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise ValueError("zip without data.pkl")
        root = pkl[: -len("data.pkl")]
        obj = _SafeUnpickler(io.BytesIO(zf.read(pkl)), storages).load()
        buffers = {}
        for key, (dtype, numel) in storages.items():
            raw = zf.read(f"{root}data/{key}")
            nbytes = numel * np.dtype(dtype).itemsize
            if len(raw) < nbytes:
                raise ValueError(f"truncated storage {key}")
            buffers[key] = np.frombuffer(raw[:nbytes], dtype=np.dtype(dtype).newbyteorder("<"))
    return _materialise(obj, buffers)


def load_torch_state_dict(path) -> "collections.OrderedDict[str, np.ndarray]":
    """Read a torch ``.pth`` (legacy or zip) state dict as ``{name: numpy array}``.

    Raises:
        ModelFileError: missing, truncated, corrupt or non-tensor content (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: weights file not found")
    storages: dict = {}
    try:
        if zipfile.is_zipfile(path):
            obj = _load_zip(path, storages)
        else:
            with open(path, "rb") as f:
                obj = _load_legacy(f, storages)
    except ModelFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure means a bad file
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelFileError(f"{path}: not a readable PyTorch state dict ({msg})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, np.ndarray) for v in obj.values()):
        raise ModelFileError(f"{path}: does not contain a state dict of tensors")
    return obj
