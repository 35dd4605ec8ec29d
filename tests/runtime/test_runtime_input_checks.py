"""What the runtime says about bad or unusual input before (or instead of) running a model: folders
given as --model, missing inputs, picamera2 that does not load, OpenCV without windows, delegate
libraries, and the padding rows of an --nms file. No model is exported here: each check runs
before a model would load, or on small arrays."""
from __future__ import annotations

import json
import re
import sys
import warnings

import numpy as np
import pytest

from edgedet.cli import main
from edgedet.errors import ModelFileError, ToolchainError
from edgedet.files import model_kind


def _one_error_line(capsys) -> str:
    """The error line (after any notes, e.g. about --headless without --save)."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("edgedet: error:") and all(ln.startswith("edgedet: ") for ln in lines), lines
    return lines[-1]


# ------------------------------------------------------------------ folders as --model


def test_only_a_folder_with_an_xml_is_an_openvino_model(tmp_path, capsys):
    ov = tmp_path / "m_openvino-fp32"
    ov.mkdir()
    (ov / "m.xml").write_text("<net/>")
    assert model_kind(ov) == "openvino" and model_kind(f"{ov}/") == "openvino"
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"model": "lite0"}))
    with pytest.raises(ModelFileError, match=r"run: a training run folder, not an exported model: export it with "
                                             r"edgedet convert --weights .*run --target"):
        model_kind(run)
    data = tmp_path / "dataset"
    (data / "images").mkdir(parents=True)
    with pytest.raises(ModelFileError, match=r"dataset: not a model \(an OpenVINO model is a folder with an .xml and .bin\)"):
        model_kind(data)
    # the CLI says the same in one line, whether or not OpenVINO is installed
    (tmp_path / "img.jpg").write_bytes(b"")
    assert main(["detect", "--model", str(run), str(tmp_path / "img.jpg")]) == 2
    assert "a training run folder, not an exported model" in _one_error_line(capsys)
    assert main(["detect", "--model", str(data), str(tmp_path / "img.jpg")]) == 2
    assert "not a model (an OpenVINO model is a folder" in _one_error_line(capsys)


# ------------------------------------------------------------------ inputs checked before the model loads


def test_missing_inputs_are_named_before_the_model_loads(tmp_path, capsys):
    # The model file does not exist either: the input's error coming first shows the order.
    model = str(tmp_path / "not_loaded.tflite")
    (tmp_path / "here.jpg").write_bytes(b"")
    assert main(["detect", "--model", model, str(tmp_path / "here.jpg"), str(tmp_path / "nosuch.jpg")]) == 2
    assert _one_error_line(capsys).endswith("nosuch.jpg: no such image file")
    assert main(["detect", "--model", model, str(tmp_path / "nosuch")]) == 2
    assert _one_error_line(capsys).endswith("nosuch: no such file")
    assert main(["camera", "--model", model, "--source", str(tmp_path / "nosuch.mp4"), "--headless"]) == 2
    assert _one_error_line(capsys).endswith("nosuch.mp4: no such file")


def test_opencv_is_checked_before_the_model_loads(tmp_path, capsys, monkeypatch):
    model = str(tmp_path / "not_loaded.tflite")
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\0" * 64)
    monkeypatch.setitem(sys.modules, "cv2", None)  # OpenCV not installed
    assert main(["detect", "--model", model, str(video)]) == 2
    assert 'pip install "edgedet[camera]"' in _one_error_line(capsys)
    assert main(["camera", "--model", model, "--source", "0", "--headless"]) == 2
    assert 'pip install "edgedet[camera]"' in _one_error_line(capsys)
    # a headless image folder needs no OpenCV: the model is what is missing then
    (tmp_path / "a.jpg").write_bytes(b"")
    assert main(["camera", "--model", model, "--source", str(tmp_path), "--headless"]) == 2
    assert "not_loaded.tflite: no such model file" in _one_error_line(capsys)


def test_headless_opencv_says_how_to_get_a_window(tmp_path, capsys, monkeypatch):
    cv2 = pytest.importorskip("cv2")
    from edgedet.runtime import camera

    if camera._has_gui(cv2):
        pytest.skip("this OpenCV build has window support")
    # imshow itself fails on this build; the message says what to install
    with pytest.raises(ToolchainError) as exc:
        camera._show(cv2, "edgedet-test", np.zeros((8, 8, 3), np.uint8))
    msg = str(exc.value)
    assert "\n" not in msg and len(msg) < 260 and "has no window support (opencv-python-headless)" in msg
    assert "pip uninstall opencv-python-headless && pip install opencv-python" in msg
    assert "--headless --save out.mp4" in msg
    # and the camera command says it before loading the model, even with a display
    monkeypatch.setenv("DISPLAY", ":0")
    (tmp_path / "a.jpg").write_bytes(b"")
    assert main(["camera", "--model", str(tmp_path / "not_loaded.tflite"), "--source", str(tmp_path)]) == 2
    assert "this OpenCV build has no window support" in _one_error_line(capsys)


# ------------------------------------------------------------------ picamera2


@pytest.fixture
def picamera2_stub(tmp_path, monkeypatch):
    """Writes a ``picamera2`` package with the given body on sys.path; removed again afterwards."""
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)

    def write(body: str):
        pkg = tmp_path / "stub" / "picamera2"
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text(body)
        monkeypatch.syspath_prepend(str(tmp_path / "stub"))

    yield write
    sys.modules.pop("picamera2", None)


def test_picamera2_built_for_another_numpy_falls_back_with_advice(picamera2_stub, capsys):
    from edgedet.runtime.frames import FrameSource

    picamera2_stub('raise ValueError("numpy.dtype size changed, may indicate binary incompatibility. '
                   'Expected 96 from C header, got 88 from PyObject")\n')
    assert FrameSource("0")._picamera2(0) is None
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("edgedet: note: picamera2 does not load with this numpy (")
    assert err.endswith(": pip install --force-reinstall simplejpeg, or make the venv without "
                        "--system-site-packages; using OpenCV's camera")


def test_picamera2_with_a_missing_dependency_falls_back_with_a_note(picamera2_stub, capsys):
    from edgedet.runtime.frames import FrameSource

    picamera2_stub("import libcamera_not_installed_here\n")
    assert FrameSource("0")._picamera2(0) is None
    err = capsys.readouterr().err.strip()
    assert err == ("edgedet: note: picamera2 does not load (No module named 'libcamera_not_installed_here'); "
                   "using OpenCV's camera")


def test_picamera2_without_a_camera_falls_back_with_a_note(picamera2_stub, capsys):
    from edgedet.runtime.frames import FrameSource

    picamera2_stub("class Picamera2:\n    def __init__(self, index):\n        [][index]\n")
    assert FrameSource("0")._picamera2(0) is None
    err = capsys.readouterr().err.strip()
    assert err == "edgedet: note: picamera2 found no camera 0 (list index out of range); using OpenCV's camera"


def test_picamera2_frames_come_out_rgb(picamera2_stub, capsys):
    from edgedet.runtime.frames import FrameSource

    picamera2_stub(
        "import numpy as np\n"
        "stopped = []\n"
        "class Picamera2:\n"
        "    def __init__(self, index): self.index = index\n"
        "    def create_preview_configuration(self, main): return main\n"
        "    def configure(self, config): self.config = config\n"
        "    def start(self): pass\n"
        "    def stop(self): stopped.append(self.index)\n"
        "    def capture_array(self):\n"
        "        a = np.zeros((480, 640, 3), np.uint8); a[..., 0] = 200; return a  # B,G,R in memory\n"
    )
    src = FrameSource("1")
    frame = next(iter(src))
    assert frame.shape == (480, 640, 3) and frame[0, 0].tolist() == [0, 0, 200]
    src.close()
    import picamera2

    assert picamera2.stopped == [1] and capsys.readouterr().err == ""


# ------------------------------------------------------------------ delegates


def test_nnapi_error_names_each_library_once(tmp_path):
    pytest.importorskip("ai_edge_litert")
    from edgedet.runtime.backends.litert import _NNAPI_LIBS
    from edgedet.runtime.detector import Detector

    fake = tmp_path / "m.tflite"
    fake.write_bytes(b"\x1c\0\0\0TFL3" + b"\0" * 64)  # passes the header check; the delegate fails first
    with pytest.raises(ToolchainError) as exc:
        Detector.from_file(fake, device="nnapi")
    msg = str(exc.value)
    for lib in _NNAPI_LIBS:
        assert len(re.findall(rf"(?<![\w]){re.escape(lib)}", msg)) == 1, msg
    assert "\n" not in msg and "install the NNAPI delegate library" in msg


# ------------------------------------------------------------------ --nms files


def _nms_outputs(classes_pad: np.ndarray, scores_pad: np.ndarray):
    boxes = np.zeros((1, 6, 4), np.float32)
    classes = np.concatenate([np.array([2.0, 0.0, 1.0], np.float32), classes_pad])[None]
    scores = np.concatenate([np.array([0.91, 0.62, 0.45], np.float32), scores_pad])[None]
    return [boxes, scores, np.array([3.0], np.float32), classes]  # scrambled, as TF2 converters write them


def test_nms_order_check_reads_only_the_rows_below_the_count():
    from edgedet.runtime.detector import Detector

    snan = np.array([0x7F800001], np.uint32).view(np.float32)[0]  # uninitialised memory can hold these
    det = Detector.__new__(Detector)
    # Assume the op's order (classes at 1, scores at 3): here it is the other way round.
    det._nms_idx, det._nms_checked = (0, 1, 3, 2), False
    outs = _nms_outputs(classes_pad=np.array([snan, -2.3e-31, 7.5], np.float32),
                        scores_pad=np.array([snan, 1e-38, 0.25], np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "invalid value encountered in rint" from the padding
        det._check_nms_order(outs)
    # fractional padding in the classes would have made both outputs look like scores
    assert det._nms_checked and det._nms_idx == (0, 3, 1, 2)


def test_nms_file_note_names_the_options_it_ignores():
    import argparse

    from edgedet.runtime import cli
    from edgedet.runtime.metadata import ModelMeta

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    meta = ModelMeta(labels=["a"], input_size=(64, 64), outputs="nms",
                     extra={"nms": {"score_threshold": 0.3, "iou_threshold": 0.5, "per_class": False}})

    def note(*flags):
        return cli._in_graph_nms_note(parser.parse_args(["detect", "--model", "m.tflite", "x.jpg", *flags]), meta)

    expected = ("m.tflite: in-graph NMS (score >= 0.3, IoU 0.5, across classes): --iou, --nms and --soft-nms have "
                "no effect; --score below 0.3 changes nothing")
    assert note("--iou", "0.6") == expected and note("--soft-nms") == expected and note("--nms", "class") == expected
    assert note("--score", "0.2") == expected
    assert note() is None and note("--score", "0.5") is None  # nothing given that the file ignores
    meta.extra["nms"]["per_class"] = True
    assert "IoU 0.5, per class)" in note("--nms", "global")
    meta.outputs = "raw"
    assert note("--iou", "0.6") is None


def test_a_folder_says_which_sub_folders_it_did_not_search(tmp_path, capsys):
    from PIL import Image

    from edgedet.runtime.cli import _expand

    (tmp_path / "day" / "more").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "day" / "a.jpg")
    assert _expand([str(tmp_path / "day")]) == [("image", str(tmp_path / "day" / "a.jpg"))]
    assert "1 sub-folder not searched (give it as inputs)" in capsys.readouterr().err
    (tmp_path / "day" / "a.jpg").unlink()
    with pytest.raises(Exception, match=r"no images in this folder \(its 1 sub-folders are not searched"):
        _expand([str(tmp_path / "day")])
