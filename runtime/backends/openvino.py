"""OpenVINO backend: CPU, GPU, NPU or AUTO, compiled with the LATENCY performance hint.

``device`` reports what OpenVINO actually used (``EXECUTION_DEVICES``), which matters for AUTO.
"""
from __future__ import annotations

import sys

import numpy as np

from edgedet.errors import ModelFileError, ToolchainError
from edgedet.runtime.backends.base import Backend, TensorSpec
from edgedet.runtime.metadata import openvino_xml


class OpenVINOBackend(Backend):
    """Runs an OpenVINO IR (``.xml`` + ``.bin``, or their folder).

    Args:
        path: ``.xml`` file or the folder holding it.
        device: "CPU" (default), "GPU", "NPU", "AUTO" (any OpenVINO device string).
        threads: ``INFERENCE_NUM_THREADS`` on CPU; ``None`` = OpenVINO default.
        fallback: "cpu" to use the CPU when the device is not present (with a warning).
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
        if base not in ("AUTO", "MULTI", "HETERO") and not any(a.split(".")[0] == base for a in available):
            msg = f"OpenVINO device {dev} is not available here (found: {', '.join(available) or 'none'}); install its driver (GPU: intel-opencl-icd; NPU: the Intel NPU driver)"
            if fallback != "cpu":
                raise ToolchainError(msg)
            print(f"edgedet: warning: {msg}; running on CPU (--fallback cpu)", file=sys.stderr)
            dev = "CPU"
        try:
            model = core.read_model(xml)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError with long text
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelFileError(f"{xml}: cannot read OpenVINO model ({first[:200]})") from exc
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if dev == "CPU":
            # On CPUs with AVX512-BF16 / AMX OpenVINO otherwise runs float layers in bfloat16:
            # quicker, but an fp32 file would no longer give the float model's detections.
            config["INFERENCE_PRECISION_HINT"] = "f32"
        if threads and dev == "CPU":
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.compiled = core.compile_model(model, dev, config)
        except Exception as exc:  # noqa: BLE001
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ToolchainError(f"OpenVINO could not compile {xml} for {dev} ({first[:200]})") from exc
        try:
            used = self.compiled.get_property("EXECUTION_DEVICES")
            self.device = ",".join(used) if isinstance(used, (list, tuple)) else str(used)
        except Exception:  # noqa: BLE001 - older plugins lack the property
            self.device = dev
        self.delegate = None
        self.request = self.compiled.create_infer_request()
        self.inputs = [_spec(p) for p in self.compiled.inputs]
        self.outputs = [_spec(p) for p in self.compiled.outputs]

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        req = self.request
        req.infer({0: x})
        # .data is a zero-copy numpy view of the output tensor, valid until the next infer.
        return [req.get_output_tensor(i).data for i in range(len(self.outputs))]


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
