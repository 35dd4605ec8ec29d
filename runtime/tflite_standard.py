"""Read the standard TFLite Model Metadata (TFLite Support ``ModelMetadata``) without TensorFlow.

A ``.tflite`` carries it as a ``ModelMetadata`` flatbuffer (file identifier ``M001``) in the
model buffer that the ``TFLITE_METADATA`` entry of ``Model.metadata`` points at; associated
files (labels, edgedet.json) are a zip appended to the model. MediaPipe, the Task Library and
Model Maker write files this way. Only the few fields the runtime needs are read, with a
bounds-checked flatbuffer walk (schema: tensorflow/lite/schema/schema.fbs and TFLite
Support's metadata_schema.fbs; field slots in the comments below), so the runtime needs no
``flatbuffers`` or schema package.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from edgedet.errors import ModelFileError

METADATA_NAME = "TFLITE_METADATA"
_NORMALIZATION = 1  # ProcessUnitOptions.NormalizationOptions
_LABEL_TYPES = (3, 2)  # AssociatedFileType.TENSOR_VALUE_LABELS, TENSOR_AXIS_LABELS


class _Bad(Exception):
    """A read outside the buffer or of the wrong shape; carries the field being read."""


class _Table:
    """One flatbuffer table at ``pos`` of ``buf``: fields by vtable slot."""

    def __init__(self, buf: bytes, pos: int, what: str):
        self.buf, self.pos, self.what = buf, pos, what
        vt = pos - self._i32(pos)
        self.vt, self.vt_len = vt, self._u16(vt)

    def _unpack(self, fmt: str, at: int):
        if at < 0 or at + struct.calcsize(fmt) > len(self.buf):
            raise _Bad(self.what)
        return struct.unpack_from(fmt, self.buf, at)[0]

    def _i32(self, at):
        return self._unpack("<i", at)

    def _u16(self, at):
        return self._unpack("<H", at)

    def _off(self, slot: int) -> int:
        """Absolute position of field ``slot``, or 0 when absent."""
        if 4 + 2 * slot >= self.vt_len:
            return 0
        rel = self._u16(self.vt + 4 + 2 * slot)
        return self.pos + rel if rel else 0

    def _deref(self, at: int) -> int:
        return at + self._unpack("<I", at)

    def scalar(self, slot: int, fmt: str, default=0):
        at = self._off(slot)
        return self._unpack(fmt, at) if at else default

    def string(self, slot: int, name: str) -> str | None:
        at = self._off(slot)
        if not at:
            return None
        s = self._deref(at)
        n = self._unpack("<I", s)
        if s + 4 + n > len(self.buf):
            raise _Bad(f"{self.what}.{name}")
        return self.buf[s + 4 : s + 4 + n].decode("utf-8", "replace")

    def table(self, slot: int, name: str) -> "_Table | None":
        at = self._off(slot)
        return _Table(self.buf, self._deref(at), f"{self.what}.{name}") if at else None

    def _vector(self, slot: int) -> tuple[int, int]:
        at = self._off(slot)
        if not at:
            return 0, 0
        v = self._deref(at)
        return v + 4, self._unpack("<I", v)

    def tables(self, slot: int, name: str) -> list["_Table"]:
        start, n = self._vector(slot)
        return [_Table(self.buf, self._deref(start + 4 * i), f"{self.what}.{name}[{i}]") for i in range(n)]

    def floats(self, slot: int, name: str) -> list[float]:
        start, n = self._vector(slot)
        if start + 4 * n > len(self.buf):
            raise _Bad(f"{self.what}.{name}")
        return list(struct.unpack_from(f"<{n}f", self.buf, start)) if n else []

    def bytes_(self, slot: int, name: str) -> bytes:
        start, n = self._vector(slot)
        if start + n > len(self.buf):
            raise _Bad(f"{self.what}.{name}")
        return self.buf[start : start + n]


@dataclass
class StandardMeta:
    """What the runtime uses of a file's standard metadata.

    Attributes:
        name, description: ``ModelMetadata`` name/description.
        mean, std: input normalisation ``(x - mean) / std`` (pixel units), or None.
        label_file: associated file with the class names (``TENSOR_VALUE_LABELS``), or None.
        output_names: output tensor metadata names, e.g. ``["location", "category", "score",
            "number of detections"]`` for a detector with in-graph NMS.
    """

    name: str = ""
    description: str = ""
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    label_file: str | None = None
    output_names: list[str] = field(default_factory=list)


def _root(buf: bytes, ident: bytes | None, what: str) -> _Table:
    if len(buf) < 8 or (ident is not None and buf[4:8] != ident):
        raise _Bad(f"{what} (file identifier {buf[4:8]!r}, expected {ident!r})")
    return _Table(buf, struct.unpack_from("<I", buf, 0)[0], what)


def metadata_buffer(model: bytes) -> bytes | None:
    """The ``ModelMetadata`` bytes of a TFLite flatbuffer, or None when it has none."""
    root = _root(model, None, "Model")  # older converters wrote no "TFL3" identifier
    buffers = root.tables(4, "buffers")  # Model.buffers
    for entry in root.tables(6, "metadata"):  # Model.metadata: name (0), buffer (1)
        if entry.string(0, "name") != METADATA_NAME:
            continue
        idx = entry.scalar(1, "<I")
        if idx >= len(buffers):
            raise _Bad(f"Model.metadata[{METADATA_NAME}].buffer ({idx} of {len(buffers)})")
        buf = buffers[idx]
        data = buf.bytes_(0, "data")  # Buffer.data; large models use offset (1) + size (2)
        if not data:
            off, size = buf.scalar(1, "<Q"), buf.scalar(2, "<Q")
            if not size or off + size > len(model):
                raise _Bad(f"Model.buffers[{idx}] (TFLITE_METADATA)")
            data = model[off : off + size]
        return bytes(data)
    return None


def parse_metadata(buf: bytes) -> StandardMeta:
    """Decode the fields of :class:`StandardMeta` from ``ModelMetadata`` bytes."""
    mm = _root(buf, b"M001", "ModelMetadata")
    out = StandardMeta(name=mm.string(0, "name") or "", description=mm.string(1, "description") or "")
    for sg in mm.tables(3, "subgraph_metadata")[:1]:
        inputs = sg.tables(2, "input_tensor_metadata")
        for pu in (inputs[0].tables(4, "process_units") if inputs else []):
            if pu.scalar(0, "<B") == _NORMALIZATION:
                opts = pu.table(1, "options")
                mean, std = (opts.floats(0, "mean"), opts.floats(1, "std")) if opts else ([], [])
                if not mean or not std or any(s == 0 for s in std):
                    raise _Bad(f"{pu.what}.NormalizationOptions (mean {mean}, std {std})")
                out.mean, out.std = tuple(mean), tuple(std)
        files = []
        for t in sg.tables(3, "output_tensor_metadata"):
            out.output_names.append(t.string(0, "name") or "")
            files += t.tables(6, "associated_files")
        files += sg.tables(4, "associated_files") + mm.tables(6, "associated_files")
        for ftype in _LABEL_TYPES:
            hit = next((f for f in files if f.scalar(2, "<b") == ftype), None)
            if hit is not None:
                out.label_file = hit.string(0, "name")
                break
    return out


def read_standard(path: str, data: bytes | None = None) -> StandardMeta | None:
    """Standard metadata of a ``.tflite`` (None when it has none).

    Raises:
        ModelFileError: the metadata is present but malformed (names the field).
    """
    if data is None:
        with open(path, "rb") as f:
            data = f.read()
    try:
        buf = metadata_buffer(data)
        return None if buf is None else parse_metadata(buf)
    except (_Bad, struct.error, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: malformed TFLite metadata: {exc}") from None
