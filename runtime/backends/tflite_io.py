"""The uint8 boundary of a full-integer TFLite graph, and how the runtime skips it.

A full-integer model with uint8 I/O (what the Edge TPU, NNAPI and Model Maker files use) starts
with a QUANTIZE uint8 -> int8 and ends in QUANTIZE ops int8 -> uint8 that only flip the type:
the same scale with the zero point moved by 128, i.e. ``q - 128`` and ``q + 128``. XNNPACK has no
kernel for a QUANTIZE whose input and output types differ, so LiteRT runs these on its built-in
kernel, single-threaded, outside the delegate. For Lite0@320 with a 90-class head the outputs
are 1.8 M values and ~2-3 ms of a ~21 ms invoke, the input 0.3 M values
(``benchmarks/bench_latency_lite0.py``). (Rewriting each one as DEQUANTIZE + QUANTIZE through
float32, which XNNPACK does run, recovers only about half of that.)

The runtime's decoder reads int8 as readily as uint8, and a uint8 canvas becomes int8 pixels by
flipping the top bit (``InputPlan``), so on CPU :class:`LiteRTBackend` hands the interpreter an
in-memory copy made by :func:`strip_type_flips`: the boundary QUANTIZE ops are gone and the int8
tensors, renamed to the public names, are the graph's input and outputs. Exact by construction
(same values shifted by 128, zero point shifted by 128); the test suite pins it. The file on
disk keeps its QUANTIZE ops, which the Edge TPU compiler maps and apps expecting uint8 need.

Pure Python + numpy + ``flatbuffers`` and LiteRT's generated schema (both ship with
``ai-edge-litert``); :func:`strip_type_flips` returns ``None`` where they are missing.
"""
from __future__ import annotations

import collections

import numpy as np

_INT8, _UINT8 = 9, 3  # schema TensorType values


def _imports():
    try:
        from ai_edge_litert import schema_py_generated as fb  # noqa: PLC0415
        from ai_edge_litert.tools import flatbuffer_utils as fu  # noqa: PLC0415
    except ImportError:  # tflite-runtime (armv7l) ships neither
        return None, None
    return fb, fu


def _type_flip(sub, op, src: int, dst: int) -> bool:
    """QUANTIZE ``src`` -> ``dst`` (int8/uint8 either way) with one scale and zero points 128 apart."""
    if len(op.inputs) != 1 or len(op.outputs) != 1:
        return False
    a, b = sub.tensors[op.inputs[0]], sub.tensors[op.outputs[0]]
    if (a.type, b.type) != (src, dst):
        return False
    qa, qb = a.quantization, b.quantization
    if qa is None or qb is None or qa.scale is None or qb.scale is None:
        return False
    if len(qa.scale) != 1 or len(qb.scale) != 1 or len(qa.zeroPoint) != 1 or len(qb.zeroPoint) != 1:
        return False
    if not np.isclose(float(qa.scale[0]), float(qb.scale[0]), rtol=1e-6, atol=0.0):
        return False
    shift = 128 if dst == _UINT8 else -128
    return int(qb.zeroPoint[0]) - int(qa.zeroPoint[0]) == shift


def has_uint8_io(buf) -> bool:
    """Whether subgraph 0 has a uint8 input or output (lazy flatbuffer read: nothing else is touched)."""
    fb, _ = _imports()
    if fb is None:
        return False
    sub = fb.Model.GetRootAs(buf, 0).Subgraphs(0)
    ends = list(sub.InputsAsNumpy()) + list(sub.OutputsAsNumpy())
    return any(sub.Tensors(int(i)).Type() == _UINT8 for i in ends)


def strip_type_flips(data: bytes) -> tuple[bytes, int] | None:
    """Drop the uint8 <-> int8 QUANTIZE ops at the graph's input and outputs; the int8 tensors
    become the graph's input and outputs.

    Args:
        data: a ``.tflite`` flatbuffer (trailing bytes, e.g. an appended metadata zip, are ignored).

    Returns:
        ``(new flatbuffer, number of ops removed)``, or ``None`` when nothing qualifies or the
        flatbuffer tooling is not installed. The exposed int8 tensors take the public names
        (``image``, ``class_p3`` ...) and signature entries of the uint8 ones they replace, so
        tensors are still found by name; their ``(scale, zero_point)`` differ only by the 128
        shift. An input QUANTIZE is dropped only when it is the uint8 input's sole reader.
    """
    fb, fu = _imports()
    if fb is None:
        return None
    model = fu.convert_bytearray_to_object(bytearray(data))
    quantize = fb.BuiltinOperator.QUANTIZE
    count = 0
    for si, sub in enumerate(model.subgraphs):
        ins, outs = [int(i) for i in sub.inputs], [int(o) for o in sub.outputs]
        readers = collections.Counter(int(t) for op in sub.operators for t in op.inputs)
        in_map, out_map, keep = {}, {}, []
        for op in sub.operators:
            code = model.operatorCodes[op.opcodeIndex]
            if max(code.builtinCode, code.deprecatedBuiltinCode) == quantize:
                src, dst = int(op.inputs[0]), int(op.outputs[0])
                if dst in outs and not readers[dst] and _type_flip(sub, op, _INT8, _UINT8):
                    out_map[dst] = src  # read the int8 tensor directly
                    continue
                if src in ins and readers[src] == 1 and _type_flip(sub, op, _UINT8, _INT8):
                    in_map[src] = dst  # feed the int8 tensor directly
                    continue
            keep.append(op)
        if not (in_map or out_map):
            continue
        for old, new in list(in_map.items()) + list(out_map.items()):
            t_old, t_new = sub.tensors[old], sub.tensors[new]
            t_old.name, t_new.name = (t_new.name or b"") + b"/boundary", t_old.name
        sub.inputs = np.array([in_map.get(i, i) for i in ins], np.int32)
        sub.outputs = np.array([out_map.get(o, o) for o in outs], np.int32)
        sub.operators = keep
        count += len(in_map) + len(out_map)
        for sig in model.signatureDefs or []:
            if sig.subgraphIndex == si:
                for tm in sig.inputs or []:
                    tm.tensorIndex = in_map.get(int(tm.tensorIndex), tm.tensorIndex)
                for tm in sig.outputs or []:
                    tm.tensorIndex = out_map.get(int(tm.tensorIndex), tm.tensorIndex)
    if not count:
        return None
    return bytes(fu.convert_object_to_bytearray(model)), count
