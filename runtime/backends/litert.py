"""LiteRT (TFLite) backend: XNNPACK on CPU, Edge TPU and NNAPI delegates.

The interpreter comes from ``ai_edge_litert`` (current wheels), else ``tflite_runtime``
(older Raspberry Pi images), else ``tensorflow.lite`` — the first two keep TensorFlow off the device.

Delegates never fail over silently: a delegate that cannot load, fails to prepare or allocate the
graph, or takes no part of it raises :class:`ToolchainError` saying what to install, unless the
caller asked for ``fallback="cpu"`` (then a warning is printed and ``device`` says
``CPU (fallback from ...)``). A file not compiled for the Edge TPU is refused for the Edge TPU the
same way.
"""
from __future__ import annotations

import os
import platform
import sys

import numpy as np

from edgedet.errors import ConfigError, ModelFileError, ToolchainError
from edgedet.runtime.backends.base import Backend, TensorSpec, cpu_fallback

_EDGETPU_LIB = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}
_NNAPI_LIBS = ("libnnapi_delegate.so", "libtensorflowlite_nnapi_delegate.so")
_GPU_LIBS = ("libtensorflowlite_gpu_delegate.so",)
EDGETPU_CUSTOM_OP = b"edgetpu-custom-op"  # the op edgetpu_compiler puts in place of what it maps

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
    import platform  # noqa: PLC0415

    if platform.machine().lower().startswith("armv7"):  # ai-edge-litert has no 32-bit Arm wheels
        raise ToolchainError("no TFLite interpreter found: a 32-bit Arm OS has no ai-edge-litert wheels; use the 64-bit "
                             "OS, or `pip install tflite-runtime \"numpy<2\"`")
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
        fallback: "cpu" to run on CPU (with a warning) when the delegate cannot load, fails to
            prepare or allocate the graph, takes no op of it, or the file is not compiled for
            the Edge TPU; ``device`` then reads ``CPU (fallback from <device>)``.
        strip_boundary: on CPU, feed and read a uint8-I/O int8 file's int8 tensors directly
            instead of running its uint8 <-> int8 QUANTIZE ops (exact; ``False`` runs the file
            as stored).
    """

    name = "litert"

    def __init__(self, path: str, device: str | None = None, threads: int | None = None, fallback: str | None = None,
                 strip_boundary: bool = True):
        Interpreter, load_delegate, module, version = _interpreter_module()
        self.module, self.version, self.threads = module, version, threads
        if module == "tflite_runtime":  # reports and merged reports name what ran, with its own version
            self.name = "tflite-runtime"
        delegate, options = parse_device(device)
        requested = f"edgetpu:{options.get('device', 'auto')}" if delegate == "edgetpu" else delegate.upper()
        self.delegate, self.device = None, "CPU"
        _check_flatbuffer(path)
        kwargs = {"model_path": path}
        if threads:
            kwargs["num_threads"] = int(threads)
        self._model_bytes, self.boundary_ops_removed = None, 0
        self.interpreter = None
        if delegate != "cpu":
            try:
                if delegate == "edgetpu":
                    _check_edgetpu_compiled(path)
                lib = self._load_delegate(load_delegate, delegate, options)
                self.interpreter = _open_delegated(Interpreter, kwargs, lib, delegate, path)
                self.delegate, self.device = delegate, requested
            except (ToolchainError, ModelFileError) as exc:
                self.device = cpu_fallback(exc, fallback, requested)
        if self.interpreter is None:
            # CPU only: the graph without its uint8 <-> int8 boundary QUANTIZE ops (see tflite_io).
            if strip_boundary:
                self._model_bytes, self.boundary_ops_removed = _without_type_flips(path)
            try:
                self.interpreter = self._open(Interpreter, kwargs, path)
            except (ValueError, RuntimeError) as exc:
                raise ModelFileError(f"{path}: cannot load TFLite model ({_short(exc)})") from exc
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
                msg = _short(exc)  # dlopen's text already starts with the library's name
                errors.append(msg if lib in msg else f"{lib}: {msg}")
        what = (
            "the NNAPI delegate library (Android only; build it from LiteRT or use the Android app)"
            if delegate == "nnapi"
            else "the LiteRT GPU delegate library (built from LiteRT)"
        )
        raise ToolchainError(f"{delegate} delegate could not be loaded ({'; '.join(errors)}): install {what}")

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        it = self.interpreter
        it.set_tensor(self._in_index, x)
        it.invoke()
        return [v() for v in self._views]


def _open_delegated(Interpreter, kwargs: dict, lib, delegate: str, path: str):
    """An interpreter with the delegate applied and its tensors allocated, or :class:`ToolchainError`
    when the delegate fails to prepare or allocate, or claims no part of the graph (every op would
    run on the CPU while the report says otherwise)."""
    try:
        it = Interpreter(experimental_delegates=[lib], **kwargs)
    except (ValueError, RuntimeError) as exc:
        raise ToolchainError(f"{delegate} delegate failed to prepare {path} ({_short(exc)})") from exc
    if delegated_nodes(it) == 0:
        raise ToolchainError(f"{delegate} delegate took no operation of {path}: nothing would run on it")
    try:
        it.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ToolchainError(f"{delegate} delegate failed to allocate {path} ({_short(exc)})") from exc
    return it


def delegated_nodes(interpreter) -> int | None:
    """Nodes of the execution plan a delegate has taken over (``None`` when the interpreter cannot
    tell). Read before ``allocate_tensors``, when LiteRT has not yet applied its default XNNPACK
    delegate, so only explicitly passed delegates count."""
    ops = getattr(interpreter, "_get_ops_details", None)
    if ops is None:
        return None
    return sum(1 for op in ops() if op.get("op_name") == "DELEGATE")


def _check_edgetpu_compiled(path: str) -> None:
    """Refuse a file ``edgetpu_compiler`` never processed: it has no ``edgetpu-custom-op``, so the
    Edge TPU would run nothing of it (edgedet's ``edgetpu`` target written without the compiler
    records ``edgetpu.compiled = false`` in its metadata)."""
    import mmap  # noqa: PLC0415

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf.find(EDGETPU_CUSTOM_OP) >= 0:
            return
    from edgedet.runtime.metadata import read_metadata  # noqa: PLC0415

    try:
        said = (read_metadata(path).extra.get("edgetpu") or {}).get("compiled") is False
    except Exception:  # noqa: BLE001 - the op check above already decided; metadata only words it
        said = False
    why = "its metadata says edgetpu.compiled=false" if said else f"it has no {EDGETPU_CUSTOM_OP.decode()}"
    raise ModelFileError(f"{path}: not compiled for the Edge TPU ({why}); compile it with "
                         f"`edgetpu_compiler -s {os.path.basename(path)}` (x86-64 Linux) or run it with --device cpu")


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
