"""ONNX Runtime backend (CPU execution provider by default)."""
from __future__ import annotations

import numpy as np

from edgedet.errors import ConfigError, ModelFileError, ToolchainError
from edgedet.runtime.backends.base import Backend, TensorSpec, cpu_fallback

_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}
_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "gpu": "CUDAExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
}


class OnnxRuntimeBackend(Backend):
    """Runs a ``.onnx`` file with onnxruntime.

    Args:
        path: model file.
        device: "cpu" (default) or an execution provider short name (cuda, openvino, coreml, dml).
        threads: intra-op threads; ``None`` = library default.
        fallback: "cpu" to accept CPU when the provider is not available (with a warning).
    """

    name = "onnxruntime"

    def __init__(self, path: str, device: str | None = None, threads: int | None = None, fallback: str | None = None):
        try:
            import onnxruntime as ort  # noqa: PLC0415
        except ImportError as exc:
            raise ToolchainError("onnxruntime is not installed: `pip install onnxruntime`") from exc
        self.version, self.threads = ort.__version__, threads
        key = (device or "cpu").lower()
        if key not in _PROVIDERS:
            raise ConfigError(f"unknown onnxruntime device {device!r}; use one of {', '.join(_PROVIDERS)}")
        provider = _PROVIDERS[key]
        available = ort.get_available_providers()
        fell_back = None
        if provider not in available:
            msg = f"onnxruntime has no {provider} here (available: {', '.join(available)}); install the matching onnxruntime build"
            fell_back, provider = cpu_fallback(ToolchainError(msg), fallback, key), "CPUExecutionProvider"
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = int(threads)
            so.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(path, sess_options=so, providers=[provider])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelFileError(f"{path}: cannot load ONNX model ({first[:200]})") from exc
        self.device = fell_back or self.session.get_providers()[0]
        self.delegate = None if provider == "CPUExecutionProvider" else provider
        self.inputs = [_spec(i) for i in self.session.get_inputs()]
        self.outputs = [_spec(o) for o in self.session.get_outputs()]
        self._in_name = self.inputs[0].name

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self._in_name: x})


def _spec(node) -> TensorSpec:
    shape = tuple(int(s) if isinstance(s, int) else -1 for s in node.shape)
    return TensorSpec(name=node.name, shape=shape, dtype=np.dtype(_ORT_DTYPES.get(node.type, np.float32)))
