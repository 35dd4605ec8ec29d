"""The int8 -> uint8 output boundary of a full-integer TFLite graph, and how the runtime skips it.

A full-integer model with uint8 I/O (what the Edge TPU, NNAPI and Model Maker files use) ends in
QUANTIZE ops that only flip the type: int8 -> uint8 with the same scale and the zero point moved
by 128, i.e. ``q + 128``. XNNPACK has no kernel for a QUANTIZE whose input and output types
differ, so LiteRT runs these on its built-in kernel, single-threaded, outside the delegate. For
Lite0@320 with a 90-class head that is 1.8 M output values and ~3 ms of a ~21 ms invoke
(``benchmarks/bench_latency_lite0.py``). (Rewriting each one as DEQUANTIZE + QUANTIZE through
float32, which XNNPACK does run, recovers only about half of that.)

The runtime's decoder reads int8 as readily as uint8, so on CPU :class:`LiteRTBackend` hands the
interpreter an in-memory copy made by :func:`strip_type_flips`: the output QUANTIZE ops are gone
and the int8 tensors, renamed to the public names, are the outputs. Exact by construction (same
values minus 128, zero point minus 128); the test suite pins it. The file on disk keeps its
QUANTIZE ops, which the Edge TPU compiler maps and apps expecting uint8 need.

Pure Python + numpy + ``flatbuffers`` and LiteRT's generated schema (both ship with
``ai-edge-litert``); :func:`strip_type_flips` returns ``None`` where they are missing.
"""
from __future__ import annotations

import numpy as np

_INT8, _UINT8 = 9, 3  # schema TensorType values


def _imports():
    try:
        from ai_edge_litert import schema_py_generated as fb  # noqa: PLC0415
        from ai_edge_litert.tools import flatbuffer_utils as fu  # noqa: PLC0415
    except ImportError:  # tflite-runtime (armv7l) ships neither
        return None, None
    return fb, fu


def _type_flip(sub, op) -> bool:
    """QUANTIZE int8 -> uint8 with one scale and zero points 128 apart (a pure ``q + 128``)."""
    if len(op.inputs) != 1 or len(op.outputs) != 1:
        return False
    a, b = sub.tensors[op.inputs[0]], sub.tensors[op.outputs[0]]
    if (a.type, b.type) != (_INT8, _UINT8):
        return False
    qa, qb = a.quantization, b.quantization
    if qa is None or qb is None or qa.scale is None or qb.scale is None:
        return False
    if len(qa.scale) != 1 or len(qb.scale) != 1 or len(qa.zeroPoint) != 1 or len(qb.zeroPoint) != 1:
        return False
    if not np.isclose(float(qa.scale[0]), float(qb.scale[0]), rtol=1e-6, atol=0.0):
        return False
    return int(qb.zeroPoint[0]) - int(qa.zeroPoint[0]) == 128


def has_uint8_outputs(buf) -> bool:
    """Whether subgraph 0 has a uint8 output (lazy flatbuffer read: nothing else is touched)."""
    fb, _ = _imports()
    if fb is None:
        return False
    sub = fb.Model.GetRootAs(buf, 0).Subgraphs(0)
    return any(sub.Tensors(int(i)).Type() == _UINT8 for i in sub.OutputsAsNumpy())


def strip_type_flips(data: bytes) -> tuple[bytes, int] | None:
    """Drop the int8 -> uint8 QUANTIZE ops that feed graph outputs; the int8 tensors become the outputs.

    Args:
        data: a ``.tflite`` flatbuffer (trailing bytes, e.g. an appended metadata zip, are ignored).

    Returns:
        ``(new flatbuffer, number of ops removed)``, or ``None`` when nothing qualifies or the
        flatbuffer tooling is not installed. The exposed int8 tensors take the public names
        (``class_p3`` ...) and signature entries of the uint8 ones they replace, so outputs are
        still found by name; their ``(scale, zero_point)`` differ only by the 128 shift.
    """
    fb, fu = _imports()
    if fb is None:
        return None
    model = fu.convert_bytearray_to_object(bytearray(data))
    quantize = fb.BuiltinOperator.QUANTIZE
    count = 0
    for si, sub in enumerate(model.subgraphs):
        outs = [int(o) for o in sub.outputs]
        consumed = {int(t) for op in sub.operators for t in op.inputs}
        remap, keep = {}, []
        for op in sub.operators:
            code = model.operatorCodes[op.opcodeIndex]
            if (max(code.builtinCode, code.deprecatedBuiltinCode) == quantize and _type_flip(sub, op)
                    and int(op.outputs[0]) in outs and int(op.outputs[0]) not in consumed):
                remap[int(op.outputs[0])] = int(op.inputs[0])  # read the int8 tensor directly
                continue
            keep.append(op)
        if not remap:
            continue
        for old, new in remap.items():
            t_old, t_new = sub.tensors[old], sub.tensors[new]
            t_old.name, t_new.name = (t_new.name or b"") + b"/boundary", t_old.name
        sub.outputs = np.array([remap.get(o, o) for o in outs], np.int32)
        sub.operators = keep
        count += len(remap)
        for sig in model.signatureDefs or []:
            if sig.subgraphIndex == si:
                for tm in sig.outputs or []:
                    tm.tensorIndex = remap.get(int(tm.tensorIndex), tm.tensorIndex)
    if not count:
        return None
    return bytes(fu.convert_object_to_bytearray(model)), count
