"""Keep the toolchains' start-up chatter off the terminal unless ``--verbose``.

TensorFlow, XLA/CUDA, absl, LiteRT and OpenCV's FFmpeg write INFO/WARNING lines straight to file descriptor 2
from C++ ("failed call to cuInit", "oneDNN custom operations are on", "Created TensorFlow Lite
XNNPACK delegate for CPU", the converter's ``W0000 ...`` lines), so neither Python's logging nor
``TF_CPP_MIN_LOG_LEVEL`` alone silences all of it (absl and LiteRT ignore that variable). A
command's stderr is therefore passed through a filter that drops exactly those log-line shapes and
forwards everything else at once (progress bars, edgedet's own warnings and errors, tracebacks).

Child processes inherit the setting: ``EDGEDET_VERBOSE=1`` in the environment means verbose.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import warnings

VERBOSE_ENV = "EDGEDET_VERBOSE"

# One pattern per kind of line; each matches the start of a whole line.
NOISE = re.compile(
    rb"(?:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] \S+:\d+\] "  # TensorFlow / XLA C++ log (E: cuInit)
    rb"|[IWE]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] "  # absl C++ log (converter, MLIR)
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags"
    rb"|INFO: (?:Created TensorFlow Lite \S+ delegate for CPU|Initialized TensorFlow Lite runtime)"
    rb"|WARNING:(?:absl|tensorflow):"
    rb"|INFO:nncf:"  # NNCF's own progress log ("Validation of initial model was started")
    rb"|fully_quantize: \d+, inference_type: \d+, "  # the TFLite calibrator's settings line
    rb"|\[[\w,.-]+ @ 0x[0-9a-f]+\] "  # FFmpeg inside OpenCV ("[mov,mp4,... @ 0x55..] moov atom not found")
    rb"|\[ ?(?:WARN|ERROR|INFO):\d+@[\d.]+\] "  # OpenCV's own log ("[ WARN:0@0.006] global cap_ffmpeg_impl.hpp")
    # the gRPC status that continues a TensorFlow error log line on the next lines
    rb"|Additional GRPC error information from remote target "
    rb"|:(?:[A-Z_]+:)?Error received from peer |:\{\"created\":\"@)"
)
# A partial line (no newline yet) is held until its newline so it can be judged whole, except a
# progress bar redrawn with \r (or a very long line), which is forwarded at once.
_HOLD_LIMIT = 1 << 16


def is_verbose(argv: list[str]) -> bool:
    """``--verbose`` anywhere before a ``--``, or ``EDGEDET_VERBOSE=1`` inherited from a parent."""
    head = argv[: argv.index("--")] if "--" in argv else argv
    return "--verbose" in head or os.environ.get(VERBOSE_ENV) == "1"


def quiet_nncf(nncf) -> None:
    """NNCF logs its progress through Python logging to stdout, past the stderr filter: keep its
    INFO lines for --verbose."""
    if not is_verbose(sys.argv[1:]):
        import logging  # noqa: PLC0415

        nncf.set_log_level(logging.WARNING)


@contextlib.contextmanager
def toolchain_output(verbose: bool):
    """Run the body with the toolchains' log lines shown (``verbose``) or filtered out of stderr.

    Sets the environment before TensorFlow loads, so child processes inherit the same choice.
    """
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")  # stages' own defaults must not hide it
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # Python-side "WARNING:tensorflow:..."
    # onnxruntime's quantizer logs through the root logger ("WARNING:root:Axis 1 is out-of-range");
    # edgedet itself prints its warnings, never logs them
    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.ERROR)
    filt = _StderrFilter.install()
    _ACTIVE[:] = [filt] if filt is not None else []
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"\s*Warning: tf\.lite\.Interpreter is deprecated")
            yield
    finally:
        root.setLevel(level)
        _ACTIVE.clear()
        if filt is not None:
            filt.close()


_ACTIVE: list = []  # the installed filter, so a hard exit can drain it first


def terminal_fd() -> int:
    """The terminal's stderr: past the filter, for a process that may outlive this one's pump."""
    return _ACTIVE[0].saved if _ACTIVE else 2


def hard_exit(code: int, line: str = "", cleanup=None) -> None:
    """Write ``line`` straight to the terminal's stderr and end the process now (``os._exit``).

    For a watchdog thread while the main thread is stuck in C++: the line goes past the stderr
    filter (whose pump may be behind) to the real file descriptor, and nothing else gets to run.
    It takes the filter's lock and keeps it, so no line the pump is still forwarding (a
    toolchain's last words) lands after ``line``. ``cleanup`` runs after the line is out (still
    holding the lock, so another error line cannot slip in) and before the exit.
    """
    data = line.encode("utf-8", "replace")
    fd = terminal_fd()
    if _ACTIVE:
        _ACTIVE[0].lock.acquire(timeout=1.0)
    with contextlib.suppress(Exception):
        sys.stderr.flush()
        while data:
            data = data[os.write(fd, data):]
    if cleanup is not None:
        with contextlib.suppress(Exception):
            cleanup()
    os._exit(code)


class _StderrFilter:
    """File descriptor 2 replaced by a pipe; a thread forwards what is not :data:`NOISE`."""

    def __init__(self, saved: int, read_fd: int):
        self.saved, self.read_fd = saved, read_fd
        self.lock = threading.Lock()  # held by each forward, and for good by a hard exit
        self.thread = threading.Thread(target=self._pump, name="edgedet-stderr-filter", daemon=True)
        self.thread.start()

    @classmethod
    def install(cls) -> "_StderrFilter | None":
        try:
            sys.stderr.flush()
            saved = os.dup(2)
            r, w = os.pipe()
        except OSError:  # no usable fd 2 (embedded interpreters): leave stderr as it is
            return None
        os.dup2(w, 2)
        os.close(w)
        return cls(saved, r)

    def _pump(self) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(self.read_fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            out = b"".join(ln + b"\n" for ln in lines if not NOISE.match(ln))
            if pending and (b"\r" in pending or len(pending) > _HOLD_LIMIT):
                out, pending = out + pending, b""
            if out:
                self._write(out)
        if pending and not NOISE.match(pending):
            self._write(pending)

    def _write(self, data: bytes) -> None:
        with self.lock:
            try:
                while data:
                    data = data[os.write(self.saved, data):]
            except OSError:
                pass

    def close(self) -> None:
        """Restore fd 2 and forward what is still in the pipe (a child process still holding the
        pipe open is not waited for)."""
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(self.saved, 2)  # closes our write end, so the pump sees end-of-file
        self.thread.join(timeout=2.0)
        if not self.thread.is_alive():  # else the pump still writes to ``saved``: leave both open
            os.close(self.read_fd)
            os.close(self.saved)
