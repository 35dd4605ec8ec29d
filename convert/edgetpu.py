"""Edge TPU: compatibility check of a full-integer ``.tflite`` and the ``edgetpu`` target.

The check predicts what ``edgetpu_compiler`` will do without needing it (it only exists for
x86-64 Debian/Ubuntu): every op is looked up in the Edge TPU supported-operations table and
its documented limitations are tested on the actual tensors. The compiler maps ops in
execution order until the first one it cannot map and runs everything from there on on the
CPU, so the report names that first op ("where the graph is cut").

Source of the table and the general rules: https://coral.ai/docs/edgetpu/models-intro/
("Supported operations" and "Model requirements", compiler 16 / runtime 14):

* all tensors 8-bit quantized (int8/uint8; int32 biases), parameters constant;
* static tensor sizes;
* tensors of rank <= 3, or higher rank where only the 3 innermost dimensions exceed 1.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

from edgedet.convert.tflite_inspect import OpInfo, read_graph

INSTALL_HINT = (
    "edgetpu_compiler not on PATH (x86-64 Debian/Ubuntu only): add the apt repo "
    "'deb https://packages.cloud.google.com/apt coral-edgetpu-stable main' (key: "
    "https://packages.cloud.google.com/apt/doc/apt-key.gpg) and `sudo apt-get install edgetpu-compiler`"
)

_Q8 = ("int8", "uint8")
# The in-graph NMS of a `--nms` model: a float custom op that runs on the CPU after the TPU
# part, exactly as in Coral's own SSD/EfficientDet detection models.
POSTPROCESS = "TFLite_Detection_PostProcess"


def _acts(op: OpInfo):
    return [t for t in op.inputs if t is not None and not t.is_const]


def _fused(op: OpInfo) -> str | None:
    act = getattr(op.options, "fusedActivationFunction", 0) if op.options is not None else 0
    return "fused activation not allowed" if act else None


def _axis_not_batch(op: OpInfo) -> str | None:
    axes = []
    ax_t = op.inputs[1] if len(op.inputs) > 1 and op.name in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN") else None
    if op.name == "SPLIT":
        ax_t = op.inputs[0]  # SPLIT's first input is the axis
    if ax_t is not None and ax_t.value is not None:
        axes = [int(a) for a in ax_t.value.ravel()]
    ax = getattr(op.options, "axis", None)
    if ax is not None and op.name == "PACK":
        axes = [ax]
    data = op.inputs[1] if op.name == "SPLIT" else op.inputs[0]
    rank = len(data.shape) if data is not None else 4
    if any(a % max(rank, 1) == 0 for a in axes) and rank > 1:
        return "operates on the batch dimension"
    return None


def _conv(op: OpInfo) -> str | None:
    o = op.options
    if o is not None and getattr(o, "dilationHFactor", 1) != getattr(o, "dilationWFactor", 1):
        return "different dilation in x and y"
    return None


def _dwconv(op: OpInfo) -> str | None:
    o = op.options
    if o is not None and (getattr(o, "dilationHFactor", 1) != 1 or getattr(o, "dilationWFactor", 1) != 1):
        return "dilated depthwise kernel"
    return None


def _concat(op: OpInfo) -> str | None:
    if _fused(op):
        return _fused(op)
    if any(t is not None and t.is_const for t in op.inputs) and len(op.inputs) != 2:
        return "constant input with more than 2 inputs"
    return None


def _softmax(op: OpInfo) -> str | None:
    shape = op.inputs[0].shape
    if sum(1 for d in shape if d > 1) > 1 or (shape and shape[-1] > 16000):
        return "only 1-D softmax of at most 16000 elements"
    return None


def _strided_slice(op: OpInfo) -> str | None:
    o = op.options
    if o is not None and (getattr(o, "ellipsisMask", 0) or getattr(o, "newAxisMask", 0)):
        return "ellipsis/new-axis mask"
    strides = op.inputs[3] if len(op.inputs) > 3 else None
    if strides is not None and not strides.is_const:
        return "non-constant strides"
    if strides is not None and strides.value is not None and any(int(v) != 1 for v in strides.value.ravel()):
        return f"strides {strides.value.tolist()} (only stride 1 is supported)"
    return None


def _pad(op: OpInfo) -> str | None:
    return None  # batch padding never appears in our graphs; the compiler reports it if it does


# op name -> (minimum Edge TPU runtime version, limitation check or None)
EDGETPU_OPS: dict[str, tuple[int, object]] = {
    "ADD": (1, None), "SUB": (1, None), "MUL": (1, None), "MAXIMUM": (1, None), "MINIMUM": (1, None),
    "AVERAGE_POOL_2D": (1, _fused), "MAX_POOL_2D": (1, _fused), "CONCATENATION": (1, _concat),
    "CONV_2D": (1, _conv), "DEPTHWISE_CONV_2D": (12, _dwconv), "FULLY_CONNECTED": (1, None),
    "L2_NORMALIZATION": (1, None), "LOGISTIC": (1, None), "RELU": (1, None), "RELU6": (1, None),
    "RELU_N1_TO_1": (1, None), "TANH": (1, None), "RESHAPE": (1, None), "RESIZE_BILINEAR": (1, None),
    "RESIZE_NEAREST_NEIGHBOR": (1, None), "SLICE": (1, None), "SOFTMAX": (1, _softmax),
    "SPACE_TO_DEPTH": (1, None), "SPLIT": (1, _axis_not_batch), "STRIDED_SLICE": (1, _strided_slice),
    "EXPAND_DIMS": (13, None), "MEAN": (12, _axis_not_batch), "PACK": (13, _axis_not_batch), "PAD": (11, _pad),
    "PRELU": (13, None), "QUANTIZE": (13, None), "REDUCE_MAX": (14, _axis_not_batch),
    "REDUCE_MIN": (14, _axis_not_batch), "RSQRT": (14, None), "SQUEEZE": (12, None),
    "SUM": (13, _axis_not_batch), "SQUARED_DIFFERENCE": (14, None), "TRANSPOSE": (14, None),
    "TRANSPOSE_CONV": (13, None), "LSTM": (14, None), "UNIDIRECTIONAL_SEQUENCE_LSTM": (14, None),
    "HARD_SWISH": (14, None),
}


@dataclass
class OpVerdict:
    index: int
    name: str
    mapped: bool
    reason: str = ""
    expected_cpu: bool = False  # the trailing NMS op: on the CPU by design, not a cut


@dataclass
class EdgeTpuReport:
    """Result of :func:`check_edgetpu`.

    Attributes:
        ops: one verdict per op, execution order.
        model_errors: whole-model problems (float input, dynamic shapes ...).
        first_unmapped: the op where the compiler cuts the graph (None: fully mapped).
        compiler: parsed ``edgetpu_compiler`` log when it ran, else None.
    """

    ops: list[OpVerdict]
    model_errors: list[str] = field(default_factory=list)
    compiler: dict | None = None

    @property
    def mappable_pct(self) -> float:
        if not self.ops:
            return 0.0
        return 100.0 * sum(v.mapped for v in self.ops) / len(self.ops)

    @property
    def first_unmapped(self) -> OpVerdict | None:
        return next((v for v in self.ops if not v.mapped and not v.expected_cpu), None)

    @property
    def expected_cpu(self) -> list[str]:
        return [v.name for v in self.ops if v.expected_cpu]

    @property
    def on_tpu(self) -> int:
        """Ops before the cut, i.e. what the compiler would actually put on the TPU."""
        cut = self.first_unmapped
        return len(self.ops) - len(self.expected_cpu) if cut is None else cut.index

    def summary(self) -> str:
        n = len(self.ops)
        s = f"Edge TPU check: {sum(v.mapped for v in self.ops)}/{n} ops mappable ({self.mappable_pct:.1f}%)"
        cut = self.first_unmapped
        if cut is not None:
            s += f"; graph cut at op #{cut.index} {cut.name} ({cut.reason}): {self.on_tpu}/{n} ops on the TPU, the rest on CPU"
        if self.expected_cpu:
            s += f"; {', '.join(self.expected_cpu)} on the CPU as expected (in-graph NMS, like Coral's detection models)"
        if self.model_errors:
            s += "; " + "; ".join(self.model_errors)
        return s

    def to_dict(self) -> dict:
        cut = self.first_unmapped
        unmapped: dict[str, int] = {}
        for v in self.ops:
            if not v.mapped:
                unmapped[f"{v.name}: {v.reason}"] = unmapped.get(f"{v.name}: {v.reason}", 0) + 1
        return {
            "ops": len(self.ops), "mappable_pct": round(self.mappable_pct, 2), "ops_on_tpu": self.on_tpu,
            "first_unmapped": None if cut is None else {"index": cut.index, "op": cut.name, "reason": cut.reason},
            "unmapped": unmapped, "model_errors": self.model_errors, "compiler": self.compiler,
            "expected_cpu": self.expected_cpu,
        }


def _rank_ok(shape: tuple[int, ...]) -> bool:
    return len(shape) <= 3 or all(d == 1 for d in shape[:-3])


def check_edgetpu(path_or_bytes, runtime_version: int = 14) -> EdgeTpuReport:
    """Predict the Edge TPU compiler's mapping of a ``.tflite``.

    Args:
        path_or_bytes: full-integer TFLite model.
        runtime_version: Edge TPU runtime the model must run on (14 = current libedgetpu).
    """
    g = read_graph(path_or_bytes)
    errors = []
    nms = g.ops[-1] if g.ops and g.ops[-1].name == POSTPROCESS else None
    nms_outputs = {t.name for t in nms.outputs} if nms else set()
    # The float tail of a --nms model: DEQUANTIZE ops that only feed the NMS, then the NMS.
    nms_inputs = {t.name for t in nms.inputs if t is not None} if nms else set()
    tail = set()
    for op in reversed(g.ops[:-1] if nms else []):
        if op.name != "DEQUANTIZE" or not {t.name for t in op.outputs} <= nms_inputs:
            break
        tail.add(op.index)
    for t in g.inputs + g.outputs:
        if t.dtype not in _Q8 and t.name not in nms_outputs:
            errors.append(f"{'input' if t in g.inputs else 'output'} {t.name} is {t.dtype}, not 8-bit")
    if any(not t.static for t in g.inputs):
        errors.append("dynamic input shape")
    if g.num_subgraphs > 1:
        errors.append(f"{g.num_subgraphs} subgraphs (control flow is not supported)")
    verdicts = []
    for op in g.ops:
        if op is nms or op.index in tail:
            verdicts.append(OpVerdict(op.index, op.name, False, "float NMS tail", expected_cpu=True))
            continue
        entry = EDGETPU_OPS.get(op.name)
        reason = ""
        if entry is None:
            reason = "not in the Edge TPU op table"
        elif entry[0] > runtime_version:
            reason = f"needs Edge TPU runtime >= {entry[0]}"
        else:
            for t in _acts(op) + op.outputs:
                if t.dtype not in _Q8 and not (op.name == "QUANTIZE" and t in _acts(op)):
                    reason = f"{t.dtype} tensor {t.name!r}"
                    break
                if not t.static:
                    reason = f"dynamic shape {t.signature}"
                    break
                if not _rank_ok(t.shape):
                    reason = f"tensor rank {len(t.shape)} {t.shape}: only the 3 innermost dims may exceed 1"
                    break
            if not reason and entry[1] is not None:
                reason = entry[1](op) or ""
        verdicts.append(OpVerdict(op.index, op.name, not reason, reason))
    return EdgeTpuReport(verdicts, errors)


# ----------------------------------------------------------------------------- compiler


def find_compiler() -> str | None:
    return shutil.which("edgetpu_compiler")


def parse_compiler_log(text: str) -> dict:
    """Pull the numbers out of ``edgetpu_compiler``'s stdout.

    Returns:
        ``{"on_tpu": int, "on_cpu": int, "total": int, "subgraphs": int, "cpu_ops": {op: reason}}``
        (keys missing when the log did not say).
    """
    out: dict = {}
    pats = {
        "on_tpu": r"Number of operations that will run on Edge TPU:\s*(\d+)",
        "on_cpu": r"Number of operations that will run on CPU:\s*(\d+)",
        "total": r"Total number of operations:\s*(\d+)",
        "subgraphs": r"Number of Edge TPU subgraphs:\s*(\d+)",
    }
    for key, pat in pats.items():
        m = re.search(pat, text)
        if m:
            out[key] = int(m.group(1))
    ok = "compiled successfully" in text or "successfully compiled" in text
    if "on_tpu" not in out and "total" in out and ok and "not all operations" not in text:
        out["on_tpu"], out["on_cpu"] = out["total"], 0
    cpu_ops = {}
    in_table = False
    for line in text.splitlines():
        if line.strip().startswith("Operator") and "Status" in line:
            in_table = True
            continue
        if in_table and line.strip():
            m = re.match(r"\s*(\S+)\s+(\d+)\s+(.*)", line)
            if m and "Mapped to Edge TPU" not in m.group(3):
                cpu_ops[m.group(1)] = m.group(3).strip()
    if cpu_ops:
        out["cpu_ops"] = cpu_ops
    return out


def run_compiler(tflite_path: str, out_dir: str, timeout: int = 600) -> tuple[str, dict]:
    """Run ``edgetpu_compiler`` on a model; return (compiled model path, parsed log).

    Raises:
        ToolchainError: the compiler is missing or failed (first line of its output).
    """
    from edgedet.errors import ToolchainError

    exe = find_compiler()
    if exe is None:
        raise ToolchainError(INSTALL_HINT)
    proc = subprocess.run([exe, "-s", "-o", out_dir, tflite_path], capture_output=True, text=True, timeout=timeout)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        first = next((ln for ln in log.splitlines() if ln.strip()), f"exit code {proc.returncode}")
        raise ToolchainError(f"edgetpu_compiler failed on {tflite_path}: {first}")
    stem = os.path.splitext(os.path.basename(tflite_path))[0]
    return os.path.join(out_dir, f"{stem}_edgetpu.tflite"), parse_compiler_log(log)


# ----------------------------------------------------------------------------- target


def export_edgetpu(ctx, target, tmp_path: str, meta) -> None:
    """The ``edgetpu`` target: full-integer TFLite, the check, then the compiler if present.

    With ``edgetpu_compiler`` on PATH the artifact is the compiled model (Edge TPU custom op
    plus CPU fallback); without it, the int8 model ready to compile, and a hint how to install.
    The check's result goes into the metadata (``extra["edgetpu"]``).
    """
    from edgedet.convert.tflite_export import export_tflite

    export_tflite(ctx, target, tmp_path, meta, embed=False)
    report = check_edgetpu(tmp_path)
    ctx.log(report.summary())
    if find_compiler() is not None:
        import tempfile

        with tempfile.TemporaryDirectory(dir=os.path.dirname(tmp_path) or ".") as d:
            src = os.path.join(d, "model.tflite")
            shutil.copyfile(tmp_path, src)
            compiled, parsed = run_compiler(src, d)
            report.compiler = parsed
            os.replace(compiled, tmp_path)
        ctx.log(f"edgetpu_compiler: {parsed.get('on_tpu', '?')} ops on the Edge TPU, {parsed.get('on_cpu', '?')} on CPU")
    else:
        # The file is the int8 model ready to compile; its metadata says edgetpu.compiled=false and
        # the runtime refuses it for the Edge TPU until edgetpu_compiler has run.
        ctx.log("not compiled for the Edge TPU (runs on CPU only until compiled): " + INSTALL_HINT
                + f"; then `edgetpu_compiler -s {os.path.basename(target.filename(ctx.source.stem))}`")
    meta.extra["edgetpu"] = report.to_dict()
    meta.extra["edgetpu"]["compiled"] = report.compiler is not None
    from edgedet.convert.tflite_metadata import write_tflite_metadata

    write_tflite_metadata(tmp_path, meta, ctx.log)
