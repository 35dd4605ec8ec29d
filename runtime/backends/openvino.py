"""OpenVINO backend: CPU, GPU, NPU or AUTO, compiled with the LATENCY performance hint.

``device`` reports what OpenVINO actually used (``EXECUTION_DEVICES``), which matters for AUTO.
"""
from __future__ import annotations

import os
import re

import numpy as np

from edgedet.errors import ModelFileError, ToolchainError
from edgedet.runtime.backends.base import Backend, TensorSpec, cpu_fallback
from edgedet.runtime.metadata import openvino_xml


class OpenVINOBackend(Backend):
    """Runs an OpenVINO IR (``.xml`` + ``.bin``, or their folder).

    Args:
        path: ``.xml`` file or the folder holding it.
        device: "CPU" (default), "GPU", "NPU", "AUTO" (any OpenVINO device string).
        threads: ``INFERENCE_NUM_THREADS`` on CPU; ``None`` = OpenVINO default.
        fallback: "cpu" to use the CPU when the device is not present or cannot compile the
            model (with a warning; ``device`` then reads ``CPU (fallback from <device>)``).
    """

    name = "openvino"

    def __init__(self, path: str, device: str | None = None, threads: int | None = None, fallback: str | None = None):
        try:
            import openvino as ov  # noqa: PLC0415
        except ImportError as exc:
            raise ToolchainError("OpenVINO is not installed: `pip install openvino`") from exc
        self.version, self.threads = ov.get_version(), threads
        xml = openvino_xml(path)
        core = ov.Core()
        dev = (device or "CPU").upper()
        available = core.available_devices
        base = dev.split(".")[0].split(":")[0]
        fell_back = None
        if base not in ("AUTO", "MULTI", "HETERO") and not any(a.split(".")[0] == base for a in available):
            msg = f"OpenVINO device {dev} is not available here (found: {', '.join(available) or 'none'}); install its driver (GPU: intel-opencl-icd; NPU: the Intel NPU driver)"
            fell_back, dev = cpu_fallback(ToolchainError(msg), fallback, dev), "CPU"
        weights = os.path.splitext(xml)[0] + ".bin"
        if not os.path.isfile(weights):
            raise ModelFileError(f"{weights}: missing (the weights file that goes with {os.path.basename(xml)})")
        try:
            model = core.read_model(xml)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError with long text
            hint = f"; is {os.path.basename(weights)} complete?" if "weights" in str(exc).lower() else ""
            raise ModelFileError(f"{xml}: cannot read OpenVINO model ({_first_line(exc)}){hint}") from exc
        try:
            self.compiled = self._compile(core, model, dev, threads)
        except Exception as exc:  # noqa: BLE001
            err = ToolchainError(f"OpenVINO could not compile {xml} for {dev} ({_first_line(exc)})")
            if dev == "CPU":
                raise err from exc
            fell_back, dev = cpu_fallback(err, fallback, dev), "CPU"
            self.compiled = self._compile(core, model, dev, threads)
        try:
            used = self.compiled.get_property("EXECUTION_DEVICES")
            self.device = ",".join(used) if isinstance(used, (list, tuple)) else str(used)
        except Exception:  # noqa: BLE001 - older plugins lack the property
            self.device = dev
        self.device = fell_back or self.device
        self.delegate = None
        self.request = self.compiled.create_infer_request()
        self.inputs = [_spec(p) for p in self.compiled.inputs]
        self.outputs = [_spec(p) for p in self.compiled.outputs]

    @staticmethod
    def _compile(core, model, dev: str, threads: int | None):
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if dev == "CPU":
            # On CPUs with AVX512-BF16 or AMX, OpenVINO otherwise computes an fp32 IR in bfloat16
            # (relative error ~1e-2): the file's own precision is what gets run and validated.
            config["INFERENCE_PRECISION_HINT"] = "f32"
            if threads:
                config["INFERENCE_NUM_THREADS"] = int(threads)
        return core.compile_model(model, dev, config)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        req = self.request
        req.infer({0: x})
        # .data is a zero-copy numpy view of the output tensor, valid until the next infer.
        return [req.get_output_tensor(i).data for i in range(len(self.outputs))]


def _first_line(exc: BaseException) -> str:
    """The first line of an OpenVINO error that says something (its messages start with a stack of
    ``Exception from src/...:N:`` locations)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    said = [ln for ln in lines if not re.fullmatch(r"Exception from \S+:\d+:", ln)]
    return (said or lines or [type(exc).__name__])[0][:200]


def _spec(port) -> TensorSpec:
    names = tuple(sorted(port.get_names())) or (port.get_any_name(),)
    ps = port.get_partial_shape()
    shape = tuple(d.get_length() if d.is_static else -1 for d in ps)
    try:
        dtype = np.dtype(port.get_element_type().to_dtype())
    except Exception:  # noqa: BLE001
        dtype = np.dtype(np.float32)
    try:
        name = port.get_any_name()
    except RuntimeError:
        name = names[0] if names else ""
    return TensorSpec(name=name, shape=shape, dtype=dtype, names=names)
