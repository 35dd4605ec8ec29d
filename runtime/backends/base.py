"""What every backend exposes to :class:`edgedet.runtime.detector.Detector`."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np


@dataclass
class TensorSpec:
    """One model input or output.

    Attributes:
        name: the tensor's name (first of ``names``).
        shape: static shape, e.g. ``(1, 320, 320, 3)``; ``-1`` for dynamic dims.
        dtype: numpy dtype of the tensor.
        quant: ``(scale, zero_point)`` for int8/uint8 tensors, else ``None``.
        names: every name the backend knows this tensor by (OpenVINO tensors have several).
    """

    name: str
    shape: tuple
    dtype: np.dtype
    quant: tuple[float, int] | None = None
    names: tuple[str, ...] = field(default=())

    def __post_init__(self):
        if not self.names:
            self.names = (self.name,)


class Backend:
    """Base class. Subclasses load a model file and run one input batch.

    Attributes:
        name: backend id ("litert", "tflite-runtime" for LiteRT's interpreter from tflite_runtime,
            "onnxruntime", "openvino").
        version: the runtime library's version string.
        device: the device that actually runs the model (e.g. "CPU", "edgetpu:usb:0", "GPU.0").
        delegate: delegate name or ``None``.
        threads: CPU threads requested (``None`` = library default).
        inputs, outputs: :class:`TensorSpec` lists in the model's order.
    """

    name = "base"
    version = ""
    device = "CPU"
    delegate: str | None = None
    threads: int | None = None
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Run the model on one input array (already sized, typed and quantised).

        Returns:
            Outputs in ``self.outputs`` order. They may be zero-copy views into the backend's
            buffers, valid only until the next :meth:`run`; copy what you keep.
        """
        raise NotImplementedError

    def describe(self) -> dict:
        """Provenance for reports: backend, version, device, delegate, threads."""
        return {
            "backend": self.name,
            "version": self.version,
            "device": self.device,
            "delegate": self.delegate,
            "threads": self.threads,
        }

    def close(self) -> None:
        """Release native resources (optional)."""


def cpu_fallback(exc: Exception, fallback: str | None, requested: str) -> str:
    """The one way a backend gives up its requested device: re-raise ``exc`` unless the caller
    asked for ``fallback="cpu"``; then print a one-line warning and return the device label
    every backend reports, ``"CPU (fallback from <requested>)"``."""
    if fallback != "cpu":
        raise exc
    print(f"edgedet: warning: {exc}; running on CPU (--fallback cpu)", file=sys.stderr)
    return f"CPU (fallback from {requested})"


def open_backend(path: str, kind: str, device: str | None = None, threads: int | None = None, fallback: str | None = None) -> Backend:
    """Instantiate the backend ``kind`` ("litert" | "onnxruntime" | "openvino"), importing it lazily."""
    if kind == "litert":
        from edgedet.runtime.backends.litert import LiteRTBackend as cls  # noqa: PLC0415
    elif kind == "onnxruntime":
        from edgedet.runtime.backends.onnxruntime import OnnxRuntimeBackend as cls  # noqa: PLC0415
    elif kind == "openvino":
        from edgedet.runtime.backends.openvino import OpenVINOBackend as cls  # noqa: PLC0415
    else:
        from edgedet.errors import ConfigError  # noqa: PLC0415

        raise ConfigError(f"unknown backend {kind!r}; choose litert, onnxruntime or openvino")
    return cls(path, device=device, threads=threads, fallback=fallback)
