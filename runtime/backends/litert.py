"""LiteRT (TFLite) backend: XNNPACK on CPU, Edge TPU and NNAPI delegates.

The interpreter comes from ``ai_edge_litert`` (current wheels), else ``tflite_runtime``
(older Raspberry Pi images), else ``tensorflow.lite`` — the first two keep TensorFlow off the device.

Delegates never fail over silently: a delegate that cannot load raises :class:`ToolchainError`
saying what to install, unless the caller asked for ``fallback="cpu"`` (then a warning is printed
and ``device`` says so).
"""
from __future__ import annotations

import platform
import sys

import numpy as np

from edgedet.errors import ConfigError, ModelFileError, ToolchainError
from edgedet.runtime.backends.base import Backend, TensorSpec

_EDGETPU_LIB = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}
_NNAPI_LIBS = ("libnnapi_delegate.so", "libtensorflowlite_nnapi_delegate.so")
_GPU_LIBS = ("libtensorflowlite_gpu_delegate.so",)

EDGETPU_HELP = (
    "install the Edge TPU runtime (Debian/Raspberry Pi OS: add the Coral apt repo, then "
    "`sudo apt install libedgetpu1-std`; macOS/Windows: the edgetpu_runtime package from coral.ai), "
    "plug the device in, and use an ai-edge-litert/tflite-runtime version matching libedgetpu"
)


def _interpreter_module():
    """``(Interpreter, load_delegate, module name, version)`` from the first available package."""
    try:
        from ai_edge_litert import interpreter as mod  # noqa: PLC0415

        import ai_edge_litert  # noqa: PLC0415

        return mod.Interpreter, mod.load_delegate, "ai_edge_litert", getattr(ai_edge_litert, "__version__", "")
    except ImportError:
        pass
    try:
        from tflite_runtime import interpreter as mod  # noqa: PLC0415

        import tflite_runtime  # noqa: PLC0415

        return mod.Interpreter, mod.load_delegate, "tflite_runtime", getattr(tflite_runtime, "__version__", "")
    except ImportError:
        pass
    raise ToolchainError(
        'no TFLite interpreter found: `pip install "edgedet[runtime]"` (brings ai-edge-litert; '
        "`tflite-runtime` on older Raspberry Pi OS)"
    )


def parse_device(device: str | None) -> tuple[str, dict]:
    """Map a device string to ``(delegate, options)``.

    ``None``/"cpu"/"xnnpack" -> CPU; "edgetpu", "usb", "usb:0", "pci:0", "edgetpu:pci:0" -> Edge TPU
    (``options["device"]``); "nnapi"; "gpu".
    """
    d = (device or "cpu").strip().lower()
    if d in ("cpu", "xnnpack", "none", ""):
        return "cpu", {}
    if d.startswith("edgetpu"):
        d = d[len("edgetpu"):].lstrip(":")
        if not d:
            return "edgetpu", {}
    if d.startswith(("usb", "pci")):
        return "edgetpu", {"device": d}
    if d == "nnapi":
        return "nnapi", {}
    if d == "gpu":
        return "gpu", {}
    raise ConfigError(f"unknown LiteRT device {device!r}; use cpu, edgetpu, usb:0, pci:0, nnapi or gpu")


class LiteRTBackend(Backend):
    """Runs a ``.tflite`` file.

    Args:
        path: model file.
        device: see :func:`parse_device`.
        threads: CPU (XNNPACK) threads; ``None`` = library default.
        fallback: "cpu" to run on CPU when the delegate cannot load (with a warning).
        strip_boundary: on CPU, feed and read a uint8-I/O int8 file's int8 tensors directly
            instead of running its uint8 <-> int8 QUANTIZE ops (exact; ``False`` runs the file
            as stored).
    """

    name = "litert"

    def __init__(self, path: str, device: str | None = None, threads: int | None = None, fallback: str | None = None,
                 strip_boundary: bool = True):
        Interpreter, load_delegate, module, version = _interpreter_module()
        self.module, self.version, self.threads = module, version, threads
        delegate, options = parse_device(device)
        delegates = []
        self.delegate, self.device = None, "CPU"
        if delegate != "cpu":
            try:
                delegates = [self._load_delegate(load_delegate, delegate, options)]
                self.delegate = delegate
                self.device = f"edgetpu:{options.get('device', 'auto')}" if delegate == "edgetpu" else delegate.upper()
            except ToolchainError as exc:
                if fallback != "cpu":
                    raise
                print(f"edgedet: warning: {exc}; running on CPU (--fallback cpu)", file=sys.stderr)
                self.device = f"CPU (fallback from {delegate})"
        _check_flatbuffer(path)
        kwargs = {"model_path": path, "experimental_delegates": delegates or None}
        if threads:
            kwargs["num_threads"] = int(threads)
        # CPU only: the graph without its uint8 <-> int8 boundary QUANTIZE ops (see tflite_io).
        self._model_bytes, self.boundary_ops_removed = None, 0
        if not delegates and strip_boundary:
            self._model_bytes, self.boundary_ops_removed = _without_type_flips(path)
        try:
            self.interpreter = self._open(Interpreter, kwargs, path)
        except (ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelFileError(f"{path}: cannot load TFLite model ({first})") from exc
        it = self.interpreter
        self._in = it.get_input_details()
        self._out = it.get_output_details()
        self.inputs = [_spec(d) for d in self._in]
        self.outputs = [_spec(d) for d in self._out]
        self._in_index = self._in[0]["index"]
        # tensor(i) returns a function giving a zero-copy view of the output buffer.
        self._views = [it.tensor(d["index"]) for d in self._out]

    def _open(self, Interpreter, kwargs: dict, path: str):
        if self._model_bytes is not None:
            args = {k: v for k, v in kwargs.items() if k != "model_path"}
            try:
                it = Interpreter(model_content=self._model_bytes, **args)
                it.allocate_tensors()
                return it
            except (ValueError, RuntimeError) as exc:  # keep the file's own graph rather than fail
                print(f"edgedet: note: {path}: running the uint8 input/output conversions as stored ({_short(exc)})", file=sys.stderr)
                self._model_bytes, self.boundary_ops_removed = None, 0
        it = Interpreter(**kwargs)
        it.allocate_tensors()
        return it

    def describe(self) -> dict:
        d = super().describe()
        d["boundary_ops_removed"] = self.boundary_ops_removed
        return d

    @staticmethod
    def _load_delegate(load_delegate, delegate: str, options: dict):
        if delegate == "edgetpu":
            lib = _EDGETPU_LIB.get(platform.system(), "libedgetpu.so.1")
            try:
                _dlopen(lib)
                return load_delegate(lib, options)
            except (ValueError, OSError, RuntimeError) as exc:
                where = options.get("device", "any Edge TPU")
                raise ToolchainError(f"Edge TPU delegate {lib} could not be loaded for {where} ({_short(exc)}): {EDGETPU_HELP}") from exc
        libs = _NNAPI_LIBS if delegate == "nnapi" else _GPU_LIBS
        errors = []
        for lib in libs:
            try:
                _dlopen(lib)
                return load_delegate(lib, options)
            except (ValueError, OSError, RuntimeError) as exc:
                errors.append(_short(exc))
        what = (
            "the NNAPI delegate library (libnnapi_delegate.so, Android only; build it from LiteRT or use the Android app)"
            if delegate == "nnapi"
            else "the LiteRT GPU delegate library (libtensorflowlite_gpu_delegate.so, built from LiteRT)"
        )
        raise ToolchainError(f"{delegate} delegate could not be loaded ({errors[-1]}): install {what}")

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        it = self.interpreter
        it.set_tensor(self._in_index, x)
        it.invoke()
        return [v() for v in self._views]


def _without_type_flips(path: str) -> tuple[bytes | None, int]:
    """``(flatbuffer, ops removed)`` by :func:`~edgedet.runtime.backends.tflite_io.strip_type_flips`,
    or ``(None, 0)`` when the file has no uint8 input or output (checked without reading it
    whole) or cannot be parsed (the interpreter then reports the file as usual).

    Why: XNNPACK cannot run a QUANTIZE that changes the type, so LiteRT runs a uint8-I/O file's
    uint8 <-> int8 conversions single-threaded outside the delegate (~2.3-3 ms for Lite0@320's
    1.8 M output values); the decoder reads the int8 tensors just as well, and the input plan
    turns a uint8 canvas into int8 by flipping one bit.
    """
    import mmap  # noqa: PLC0415

    from edgedet.runtime.backends.tflite_io import has_uint8_io, strip_type_flips  # noqa: PLC0415

    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            if not has_uint8_io(buf):
                return None, 0
            done = strip_type_flips(bytes(buf))
    except Exception:  # noqa: BLE001 - a truncated/odd file: let the interpreter say what is wrong
        return None, 0
    return done if done is not None else (None, 0)


def _spec(d: dict) -> TensorSpec:
    scale, zp = d.get("quantization", (0.0, 0))
    dtype = np.dtype(d["dtype"])
    quant = (float(scale), int(zp)) if scale and np.issubdtype(dtype, np.integer) else None
    return TensorSpec(name=d["name"], shape=tuple(int(s) for s in d["shape"]), dtype=dtype, quant=quant)


def _dlopen(lib: str) -> None:
    """Open the library with ctypes first: when it is missing, LiteRT's ``load_delegate`` also
    prints a spurious ``Delegate.__del__`` traceback; this way the user sees one clean line."""
    import ctypes  # noqa: PLC0415

    ctypes.CDLL(lib)


def _short(exc: BaseException) -> str:
    s = str(exc).strip().splitlines()
    return s[0][:200] if s else type(exc).__name__


def _check_flatbuffer(path: str) -> None:
    """Cheap sanity check before handing the file to the C++ loader (which may abort on garbage)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read model file ({exc})") from exc
    if len(head) < 8 or head[4:8] != b"TFL3":
        raise ModelFileError(f"{path}: not a TFLite model (no TFL3 identifier; empty, truncated or wrong file)")
