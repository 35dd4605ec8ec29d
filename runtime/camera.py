"""Live camera / video demo: detect, draw boxes + FPS + inference ms, show and/or save.

Sources (:mod:`edgedet.runtime.frames`): a camera index, a video file or a folder of images.
OpenCV (``cv2``) is imported lazily.
The loop ends cleanly on ``q``, Ctrl-C or the end of the stream, and skips dropped frames.
Capture and pre-processing run one frame ahead on a second thread (``sequential=False``).
"""
from __future__ import annotations

import os
import queue
import sys
import threading
import time
from typing import Iterator

import numpy as np

from edgedet.errors import DataError, ToolchainError
from edgedet.runtime.draw import draw_detections
from edgedet.runtime.frames import _cv2

# The [camera] extra brings opencv-python-headless (no GUI libraries to install on a device);
# a window needs the full build.
NO_WINDOW = ("this OpenCV build has no window support (opencv-python-headless); for a window: "
             "`pip uninstall opencv-python-headless && pip install opencv-python`, or use --headless --save out.mp4")


def _window_cv2():
    """OpenCV for the demo window; refused when this build or this session cannot show one."""
    cv2 = _cv2()
    if not _has_gui(cv2):
        raise ToolchainError(NO_WINDOW)
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        raise ToolchainError("no display for the camera window; use --headless --save out.mp4")
    return cv2


def _has_gui(cv2) -> bool:
    """False when OpenCV's build information says ``GUI: NONE`` (the headless wheels); builds that
    do not say are trusted, and ``_show`` words their failure the same way."""
    import re  # noqa: PLC0415

    try:
        info = cv2.getBuildInformation()
    except Exception:  # noqa: BLE001 - an odd build: let imshow decide
        return True
    found = re.search(r"^\s*GUI:\s*(\S+)", info, re.MULTILINE)
    return not (found and found.group(1).upper() == "NONE")


def check_opencv(source=None, headless: bool = True, save: str | None = None) -> None:
    """Before the model loads: OpenCV (and its window) where the run will need them, i.e. for a
    camera, a video file (``source`` None), a saved video or the window; a headless image folder
    needs none."""
    if not headless:
        _window_cv2()
    elif save or source is None or not os.path.isdir(str(source)):
        _cv2()


SAVE_SUFFIXES = (".mp4", ".avi")


def check_save_path(path: str) -> None:
    """Refuse, before any work, a video path OpenCV would not write as one file (a ``.gif``
    or ``.png`` name is an image sequence to it) or that is a folder."""
    if os.path.isdir(path):
        raise DataError(f"{path}: is a folder; --save takes a video file name ending {' or '.join(SAVE_SUFFIXES)}")
    if not path.lower().endswith(SAVE_SUFFIXES):
        raise DataError(f"{path}: saved videos are {' or '.join(SAVE_SUFFIXES)} files")


class _Writer:
    """Atomic video writer: frames go to a temp file next to ``path``, renamed on close. The
    frame rate is read from ``source`` at the first frame, once a video file has reported it."""

    def __init__(self, path: str, source):
        check_save_path(path)
        self.path, self.source, self.w = path, source, None
        root, ext = os.path.splitext(path)
        self.tmp = f"{root}.tmp{os.getpid()}{ext}"
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        cv2 = _cv2()
        if self.w is None:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            fourcc = cv2.VideoWriter_fourcc(*("MJPG" if self.path.lower().endswith(".avi") else "mp4v"))
            fps = float(getattr(self.source, "fps", 30.0) or 30.0)
            self.w = cv2.VideoWriter(self.tmp, fourcc, fps, (rgb.shape[1], rgb.shape[0]))
            if not self.w.isOpened():
                raise ToolchainError(f"OpenCV cannot write video {self.path} (codec mp4v/MJPG missing)")
        self.w.write(np.ascontiguousarray(rgb[..., ::-1]))
        self.frames += 1

    def close(self, keep: bool = True) -> None:
        if self.w is not None:
            self.w.release()
            if keep and self.frames:
                os.replace(self.tmp, self.path)
            elif os.path.exists(self.tmp):
                os.remove(self.tmp)


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


_END = object()


def _valid(frame) -> bool:
    return frame is not None and getattr(frame, "ndim", 0) == 3


def _inline(source, prepare) -> Iterator[tuple]:
    """The sequential loop's frames: ``(frame, (x, scales, hw, pre seconds) or None)``, each prepared when needed."""
    for frame in source:
        if not _valid(frame):
            yield frame, None
            continue
        t = time.perf_counter()
        x, scales, hw = prepare(frame)
        yield frame, (x, scales, hw, time.perf_counter() - t)


class _Prefetch:
    """Capture and pre-processing on a worker thread, ``depth`` frames ahead of the consumer.

    The consumer's invoke releases the GIL (LiteRT, ONNX Runtime and OpenVINO all do), so the
    next frame is read and letterboxed while the current one is in the network. Frames come out
    in capture order, and each is prepared exactly as the sequential loop prepares it.
    """

    def __init__(self, source, prepare, depth: int = 1):
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(source, prepare), name="edgedet-capture", daemon=True)
        self._thread.start()

    def _run(self, source, prepare) -> None:
        try:
            for item in _inline(source, prepare):
                if not self._put(item):
                    return
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer (KeyboardInterrupt too)
            self._put(_Failure(exc))
            return
        self._put(_END)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[tuple]:
        while True:
            item = self._q.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


class _Frames:
    """What happens to a frame after invoke: decode, report, draw, save and show (in frame order)."""

    def __init__(self, detector, writer, cv2, window: str, on_detections):
        self.detector, self.writer, self.cv2, self.window = detector, writer, cv2, window
        self.on_detections = on_detections
        self.count = 0
        self.shown_fps = 0.0
        self.last = time.perf_counter()

    def handle(self, frame, outs, scales, hw, pre: float, invoke: float) -> bool:
        """Returns True when the user asked to stop (q / Esc in the window)."""
        t = time.perf_counter()
        dets = self.detector.decode(outs, scales, hw)
        del outs
        self.detector.last_timing = {"pre": pre, "invoke": invoke, "post": time.perf_counter() - t}
        if self.on_detections is not None:
            self.on_detections(self.count, dets)
        self.count += 1
        now = time.perf_counter()
        dt, self.last = now - self.last, now
        self.shown_fps = (1.0 / dt) if self.shown_fps == 0.0 else 0.9 * self.shown_fps + 0.1 / max(dt, 1e-6)
        if self.writer is None and self.cv2 is None:
            return False  # nothing to draw for when headless without --save
        out = draw_detections(frame, dets, f"{self.shown_fps:5.1f} FPS  inference {invoke * 1000:5.1f} ms  {len(dets)} objects")
        if self.writer is not None:
            self.writer.write(out)
        return self.cv2 is not None and _show(self.cv2, self.window, out)


class _Behind:
    """Runs ``handle`` on a worker thread, one frame behind invoke, in frame order (headless only:
    a window must be drawn from the thread that created it). An error there stops the loop."""

    def __init__(self, handle, depth: int = 2):
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(handle,), name="edgedet-post", daemon=True)
        self._thread.start()

    def _run(self, handle) -> None:
        while (item := self._q.get()) is not _END:
            if self.error is None:
                try:
                    handle(*item)
                except BaseException as exc:  # noqa: BLE001 - re-raised on the loop's thread
                    self.error = exc

    def __call__(self, *item) -> bool:
        """Queue a frame; True (stop) once the worker has failed (the error is raised by ``_finish``)."""
        if self.error is not None:
            return True
        self._q.put(item)
        return False

    def close(self) -> None:
        self._q.put(_END)
        self._thread.join()


def pipeline_threads() -> int:
    """Interpreter threads for the pipelined loop when the user gives none: every core but one.

    Capture, pre-processing and decoding run on their own threads during invoke; an interpreter
    that also wants every core makes them wait for each other. On the 2-core x86 VM, Lite0@256
    int8 ran the pipelined loop at 318 FPS with one interpreter thread, 253 with two; the
    sequential loop is quickest with two (230 FPS). See docs/performance.md.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def run_camera(detector, source, headless: bool = False, save: str | None = None, max_frames: int | None = None,
               window: str = "edgedet", sequential: bool = False, on_detections=None) -> dict:
    """Run the demo loop.

    By default it is a pipeline: capture + pre-processing of frame n+1 run on one worker thread
    and (headless) decoding, drawing and saving of frame n-1 on another while frame n is in
    invoke, which releases the GIL. ``sequential=True`` runs every step one after another.
    Both give the same detections for every frame.

    Args:
        detector: a :class:`~edgedet.runtime.detector.Detector`.
        source: a :class:`FrameSource`, or anything iterable yielding RGB frames / ``None``.
        headless: no window (use with ``save``).
        save: write the annotated video here (``.mp4`` or ``.avi``).
        max_frames: stop after this many processed frames.
        sequential: the one-thread loop (for comparison, or a source that must be read on the
            calling thread).
        on_detections: called as ``on_detections(frame_index, detections)`` for each frame.

    Returns:
        ``{"frames", "dropped", "fps", "invoke_ms", "stopped", "mode", "saved"}``: ``fps`` is frames
        per second of wall time over the whole run; stopped is "end", "q", "interrupt" or
        "max_frames"; saved is the video's path, or None when no frame was written.
    """
    cv2 = None if headless else _window_cv2()
    writer = _Writer(save, source) if save else None
    sink = _Frames(detector, writer, cv2, window, on_detections)
    items = _inline(source, detector.preprocess) if sequential else _Prefetch(source, detector.preprocess)
    behind = None if sequential or cv2 is not None else _Behind(sink.handle)
    dropped, invoke_ms, stopped = 0, [], "end"
    start = time.perf_counter()
    try:
        for frame, prepared in items:
            if prepared is None:
                dropped += 1
                continue
            x, scales, hw, pre = prepared
            t = time.perf_counter()
            outs = detector.backend.run(x)
            invoke = time.perf_counter() - t
            invoke_ms.append(invoke * 1000)
            # The next invoke reuses the interpreter's output buffers: a frame decoded on the
            # other thread gets its own copy.
            if (behind or sink.handle)(frame, [np.array(o) for o in outs] if behind else outs, scales, hw, pre, invoke):
                stopped = "q"
                break
            del outs
            if max_frames and len(invoke_ms) >= max_frames:
                stopped = "max_frames"
                break
    except KeyboardInterrupt:
        stopped = "interrupt"
    finally:
        _finish(items, behind, source, writer, cv2)
    elapsed = time.perf_counter() - start
    return {"frames": sink.count, "dropped": dropped, "fps": round(sink.count / elapsed, 2) if sink.count else 0.0,
            "invoke_ms": round(float(np.median(invoke_ms)), 2) if invoke_ms else None, "stopped": stopped,
            "mode": "sequential" if sequential else "pipelined", "saved": save if writer and writer.frames else None}


def _finish(items, behind, source, writer, cv2) -> None:
    """Stop the worker threads (the frames already invoked are decoded and saved), then release
    the source, the video file and the window; a worker's error is raised after the cleanup."""
    if isinstance(items, _Prefetch):
        items.close()
    if behind is not None:
        behind.close()
    if hasattr(source, "close"):
        source.close()
    if writer:
        writer.close(keep=True)
    if cv2 is not None:
        try:
            cv2.destroyAllWindows()
        except cv2.error:
            pass
    if behind is not None and behind.error is not None:
        raise behind.error


def _show(cv2, window: str, rgb: np.ndarray) -> bool:
    """Show a frame; True when the user pressed q or Esc."""
    try:
        cv2.imshow(window, np.ascontiguousarray(rgb[..., ::-1]))
        key = cv2.waitKey(1) & 0xFF
    except cv2.error as exc:
        if "not implemented" in str(exc).lower():  # built without GTK/Qt/Cocoa/Win32: the headless wheel
            raise ToolchainError(NO_WINDOW) from exc
        raise ToolchainError(f"OpenCV cannot open a window ({str(exc).strip().splitlines()[-1][:120]}); use --headless --save out.mp4") from exc
    return key in (ord("q"), 27)
