"""Frame sources for the camera / video loop: a camera index (picamera2 on a Raspberry Pi when it
loads, OpenCV otherwise), a video file or a folder of images, as RGB uint8 frames.

OpenCV (``cv2``) and picamera2 are imported lazily; a picamera2 that is installed but does not
load (or finds no camera) falls back to OpenCV's camera with a one-line note.
"""
from __future__ import annotations

import os
import sys
from typing import Iterator

import numpy as np

from edgedet.errors import DataError, ToolchainError

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
        elif not os.path.exists(src):
            raise DataError(f"--source {src}: no such file")
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

    def _open(self, what, error: str):
        """``(cv2, capture)`` for a video path or camera index; its FPS (30 when unknown) and close."""
        cv2 = _cv2()
        cap = cv2.VideoCapture(what)
        if not cap.isOpened():
            raise DataError(error)
        self._close = cap.release
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 30.0) or 30.0
        return cv2, cap

    def _video(self, path: str):
        cv2, cap = self._open(path, f"{path}: cannot open as video")
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
        _, cap = self._open(index, f"--source {index}: no camera at this index")
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
        """Frames from picamera2, or ``None`` (with a note saying why, unless it is simply not
        installed) when it does not load or has no camera ``index``: OpenCV's camera is tried then."""
        Picamera2 = _load_picamera2()
        if Picamera2 is None:
            return None
        cam = None
        try:
            cam = Picamera2(index)
            # "RGB888" in libcamera terms is B,G,R byte order in memory: flip to RGB.
            cam.configure(cam.create_preview_configuration(main={"format": "RGB888", "size": (640, 480)}))
            cam.start()
        except Exception as exc:  # noqa: BLE001 - IndexError (no Pi camera), RuntimeError (busy), ...
            what = "found no camera" if isinstance(exc, IndexError) else "cannot start camera"
            print(f"edgedet: note: picamera2 {what} {index} ({_short(exc)}); using OpenCV's camera", file=sys.stderr)
            if cam is not None and hasattr(cam, "close"):
                try:
                    cam.close()
                except Exception:  # noqa: BLE001 - already failed; OpenCV is tried next either way
                    pass
            return None
        self._close = cam.stop

        def frames():
            while True:
                try:
                    yield cam.capture_array()[..., ::-1]
                except RuntimeError:
                    yield None

        return frames()


def _load_picamera2():
    """picamera2's ``Picamera2`` class, or ``None``. Not installed is the usual case off a Pi and
    passes quietly; any other failure to import it gets a one-line note: on a Raspberry Pi a venv
    made with --system-site-packages mixes pip's numpy 2 with apt's simplejpeg (built for numpy
    1), and importing picamera2 then raises ValueError."""
    try:
        from picamera2 import Picamera2  # noqa: PLC0415
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] == "picamera2":
            return None
        reason = f"picamera2 does not load ({_short(exc)})"
    except Exception as exc:  # noqa: BLE001 - a broken install must not stop the OpenCV camera
        text = _short(exc)
        if isinstance(exc, ValueError) and ("numpy.dtype size changed" in text or "binary incompatib" in text):
            reason = (f"picamera2 does not load with this numpy (numpy {np.__version__}; {text}): pip install "
                      "--force-reinstall simplejpeg, or make the venv without --system-site-packages")
        else:
            reason = f"picamera2 does not load ({type(exc).__name__}: {text})"
    else:
        return Picamera2
    print(f"edgedet: note: {reason}; using OpenCV's camera", file=sys.stderr)
    return None


def _short(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:160] if lines else type(exc).__name__
