"""Live camera / video demo: detect, draw boxes + FPS + inference ms, show and/or save.

Sources: a camera index ("0"; picamera2 on a Raspberry Pi when installed, OpenCV otherwise),
a video file, or a folder of images. OpenCV (``cv2``) and picamera2 are imported lazily.
The loop ends cleanly on ``q``, Ctrl-C or the end of the stream, and skips dropped frames.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Iterator

import numpy as np

from edgedet.errors import DataError, ToolchainError
from edgedet.runtime.draw import draw_detections

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".h264")
MAX_DROPPED = 30  # consecutive failed reads before a live source counts as gone


def _cv2():
    try:
        import cv2  # noqa: PLC0415
    except ImportError as exc:
        raise ToolchainError('OpenCV is needed for video and cameras: `pip install "edgedet[camera]"`') from exc
    return cv2


class FrameSource:
    """Iterates RGB uint8 frames; ``None`` marks a dropped frame (callers skip it).

    Attributes:
        fps: the source's frame rate when known (for the saved video), else 30.
        name: what is being read.
    """

    def __init__(self, source: str | int):
        self.name = str(source)
        self.fps = 30.0
        self._close = lambda: None
        src = str(source)
        if src.isdigit():
            self._iter = self._camera(int(src))
        elif os.path.isdir(src):
            self._iter = self._folder(src)
        elif os.path.isfile(src):
            self._iter = self._video(src)
        else:
            raise DataError(f"--source {src}: not a camera index, video file or image folder")

    def __iter__(self) -> Iterator[np.ndarray | None]:
        return self._iter

    def close(self) -> None:
        self._close()

    # -------------------------------------------------------------- sources

    def _folder(self, folder: str):
        from edgedet.runtime.preprocess import is_image_file, load_image  # noqa: PLC0415

        files = sorted(f for f in os.listdir(folder) if is_image_file(f))
        if not files:
            raise DataError(f"--source {folder}: no images in this folder")
        for f in files:
            try:
                yield load_image(os.path.join(folder, f))
            except DataError as exc:
                print(f"edgedet: warning: {exc}; skipped", file=sys.stderr)
                yield None

    def _video(self, path: str):
        cv2 = _cv2()
        cap = cv2.VideoCapture(path)
        if not cap.isOpened():
            raise DataError(f"{path}: cannot open as video")
        self._close = cap.release
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 30.0) or 30.0
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        fails = 0
        while True:
            ok, frame = cap.read()
            if ok and frame is not None:
                fails = 0
                yield frame[..., ::-1]  # BGR -> RGB (a view; the detector copies when resizing)
                continue
            pos = int(cap.get(cv2.CAP_PROP_POS_FRAMES) or 0)
            fails += 1
            # a decode error mid-file is a dropped frame; at (or past) the end it is the end
            if (total and pos >= total - 1) or fails > MAX_DROPPED:
                break
            yield None
        cap.release()

    def _camera(self, index: int):
        pi = self._picamera2(index)
        if pi is not None:
            yield from pi
            return
        cv2 = _cv2()
        cap = cv2.VideoCapture(index)
        if not cap.isOpened():
            raise DataError(f"--source {index}: no camera at this index")
        self._close = cap.release
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 30.0) or 30.0
        fails = 0
        while fails <= MAX_DROPPED:
            ok, frame = cap.read()
            if ok and frame is not None:
                fails = 0
                yield frame[..., ::-1]
            else:
                fails += 1
                yield None
        print(f"edgedet: camera {index} stopped delivering frames", file=sys.stderr)
        cap.release()

    def _picamera2(self, index: int):
        try:
            from picamera2 import Picamera2  # noqa: PLC0415
        except ImportError:
            return None
        cam = Picamera2(index)
        # "RGB888" in libcamera terms is B,G,R byte order in memory: flip to RGB.
        cam.configure(cam.create_preview_configuration(main={"format": "RGB888", "size": (640, 480)}))
        cam.start()
        self._close = cam.stop

        def frames():
            while True:
                try:
                    yield cam.capture_array()[..., ::-1]
                except RuntimeError:
                    yield None

        return frames()


class _Writer:
    """Atomic video writer: frames go to a temp file next to ``path``, renamed on close."""

    def __init__(self, path: str, fps: float):
        self.path, self.fps, self.w = path, fps, None
        root, ext = os.path.splitext(path)
        self.tmp = f"{root}.tmp{os.getpid()}{ext or '.mp4'}"
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        cv2 = _cv2()
        if self.w is None:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            fourcc = cv2.VideoWriter_fourcc(*("MJPG" if self.path.lower().endswith(".avi") else "mp4v"))
            self.w = cv2.VideoWriter(self.tmp, fourcc, self.fps, (rgb.shape[1], rgb.shape[0]))
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


def run_camera(detector, source, headless: bool = False, save: str | None = None, max_frames: int | None = None,
               window: str = "edgedet") -> dict:
    """Run the demo loop.

    Args:
        detector: a :class:`~edgedet.runtime.detector.Detector`.
        source: a :class:`FrameSource`, or anything iterable yielding RGB frames / ``None``.
        headless: no window (use with ``save``).
        save: write the annotated video here (``.mp4`` or ``.avi``).
        max_frames: stop after this many processed frames.

    Returns:
        ``{"frames", "dropped", "fps", "invoke_ms", "stopped"}`` where stopped is
        "end", "q", "interrupt" or "max_frames".
    """
    cv2 = None if headless else _cv2()
    if not headless and sys.platform.startswith("linux") and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        raise ToolchainError("no display for the camera window; use --headless --save out.mp4")
    fps_src = getattr(source, "fps", 30.0)
    writer = _Writer(save, fps_src) if save else None
    frames = dropped = 0
    fps = 0.0
    invoke_ms = []
    stopped = "end"
    last = time.perf_counter()
    try:
        for frame in source:
            if frame is None or getattr(frame, "ndim", 0) != 3:
                dropped += 1
                continue
            dets = detector.detect(frame)
            now = time.perf_counter()
            dt, last = now - last, now
            fps = (1.0 / dt) if fps == 0.0 else 0.9 * fps + 0.1 / max(dt, 1e-6)
            ms = detector.last_timing["invoke"] * 1000
            invoke_ms.append(ms)
            header = f"{fps:5.1f} FPS  inference {ms:5.1f} ms  {len(dets)} objects"
            out = draw_detections(frame, dets, header)
            frames += 1
            if writer:
                writer.write(out)
            if cv2 is not None:
                try:
                    cv2.imshow(window, np.ascontiguousarray(out[..., ::-1]))
                    key = cv2.waitKey(1) & 0xFF
                except cv2.error as exc:
                    raise ToolchainError(f"OpenCV cannot open a window ({str(exc).strip().splitlines()[-1][:120]}); use --headless --save out.mp4") from exc
                if key in (ord("q"), 27):
                    stopped = "q"
                    break
            if max_frames and frames >= max_frames:
                stopped = "max_frames"
                break
    except KeyboardInterrupt:
        stopped = "interrupt"
    finally:
        if hasattr(source, "close"):
            source.close()
        if writer:
            writer.close(keep=True)
        if cv2 is not None:
            try:
                cv2.destroyAllWindows()
            except cv2.error:
                pass
    return {"frames": frames, "dropped": dropped, "fps": round(fps, 2),
            "invoke_ms": round(float(np.median(invoke_ms)), 2) if invoke_ms else None, "stopped": stopped}
