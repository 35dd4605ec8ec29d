"""Read a ``.tflite`` flatbuffer into a plain op list (no interpreter, no TensorFlow).

Used by the Edge TPU compatibility check and by the latency investigation (which ops run
in which dtype). The schema comes from ``ai_edge_litert`` (on-device wheel) and falls back to
TensorFlow's copy.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgedet.errors import ModelFileError
from edgedet.runtime.metadata import _model_length

_TYPE_NAMES = {
    0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool",
    7: "int16", 8: "complex64", 9: "int8", 10: "float64",
}


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as s  # noqa: PLC0415

        return s
    except ImportError:
        pass
    try:
        from tensorflow.lite.python import schema_py_generated as s  # noqa: PLC0415

        return s
    except ImportError as exc:  # pragma: no cover - both are dependencies of the convert extra
        from edgedet.errors import ToolchainError

        raise ToolchainError("reading .tflite files needs ai-edge-litert: pip install ai-edge-litert") from exc


@dataclass
class TensorInfo:
    """One tensor: ``shape`` as stored, ``signature`` with -1 for dynamic dims."""

    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    signature: tuple[int, ...]
    is_const: bool
    scales: int = 0  # number of quantization scales (>1: per-channel)
    value: object = None  # small int32/int64 constants (axes, strides, shapes) as a numpy array
    quant: tuple | None = None  # (scale, zero_point) of a per-tensor quantized tensor

    @property
    def static(self) -> bool:
        return all(d >= 0 for d in self.signature)


@dataclass
class OpInfo:
    """One operator in execution order.

    Attributes:
        index: position in the subgraph's operator list (= execution order).
        name: builtin op name (``CONV_2D``) or the custom code (``TFLite_Detection_PostProcess``).
        inputs, outputs: tensors (``None`` for an omitted optional input).
        options: the builtin options object (dilation, fused activation, axis ...), or None.
    """

    index: int
    name: str
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    options: object = None


@dataclass
class TFLiteGraph:
    ops: list[OpInfo]
    tensors: list[TensorInfo]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    num_subgraphs: int

    def op_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for op in self.ops:
            out[op.name] = out.get(op.name, 0) + 1
        return out


def read_graph(path_or_bytes) -> TFLiteGraph:
    """Parse subgraph 0 of a TFLite model.

    Args:
        path_or_bytes: a ``.tflite`` path (an appended edgedet metadata zip is ignored) or bytes.

    Raises:
        ModelFileError: not a TFLite flatbuffer.
    """
    if isinstance(path_or_bytes, (bytes, bytearray)):
        data, name = bytes(path_or_bytes), "<bytes>"
    else:
        name = str(path_or_bytes)
        try:
            with open(name, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ModelFileError(f"{name}: cannot read ({exc.strerror})") from exc
    data = data[: _model_length(data)]
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelFileError(f"{name}: not a TFLite flatbuffer (no TFL3 identifier)")
    s = _schema()
    model = s.ModelT.InitFromPackedBuf(bytearray(data), 0)
    builtin = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
    sub = model.subgraphs[0]
    buffers = model.buffers or []

    tensors = []
    for i, t in enumerate(sub.tensors):
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
        sig = tuple(int(d) for d in (t.shapeSignature if t.shapeSignature is not None else shape))
        buf = buffers[t.buffer] if t.buffer < len(buffers) else None
        is_const = bool(buf is not None and buf.data is not None and len(buf.data) > 0) or bool(buf is not None and getattr(buf, "size", 0))
        q = t.quantization
        scales = len(q.scale) if (q is not None and q.scale is not None) else 0
        tname = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
        dtype = _TYPE_NAMES.get(t.type, str(t.type))
        value = None
        if is_const and dtype in ("int32", "int64") and buf.data is not None and len(buf.data) <= 512:
            value = np.frombuffer(bytes(bytearray(buf.data)), dtype=dtype).reshape(shape if shape else ())
        quant = None
        if scales == 1:
            zp = int(q.zeroPoint[0]) if q.zeroPoint is not None and len(q.zeroPoint) else 0
            quant = (float(q.scale[0]), zp)
        tensors.append(TensorInfo(i, tname, dtype, shape, sig, is_const, scales, value, quant))

    ops = []
    for i, op in enumerate(sub.operators or []):
        code = model.operatorCodes[op.opcodeIndex]
        b = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        opname = builtin.get(b, str(b))
        if opname == "CUSTOM":
            cc = code.customCode
            opname = cc.decode() if isinstance(cc, bytes) else str(cc)
        ins = [tensors[j] if j >= 0 else None for j in (op.inputs if op.inputs is not None else [])]
        outs = [tensors[j] for j in (op.outputs if op.outputs is not None else [])]
        ops.append(OpInfo(i, opname, ins, outs, op.builtinOptions))
    return TFLiteGraph(
        ops=ops,
        tensors=tensors,
        inputs=[tensors[j] for j in sub.inputs],
        outputs=[tensors[j] for j in sub.outputs],
        num_subgraphs=len(model.subgraphs),
    )
