"""`edgedet detect` / `edgedet camera` end to end on a real exported model."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgedet.cli import main

pytestmark = pytest.mark.slow


def _write_video(path, frames=8, h=120, w=160):
    cv2 = pytest.importorskip("cv2")
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
    assert out.isOpened()
    for i in range(frames):
        f = np.zeros((h, w, 3), np.uint8)
        f[:, :, 1] = 40
        cv2.rectangle(f, (10 + 8 * i, 20), (60 + 8 * i, 90), (255, 255, 255), -1)
        out.write(f)
    out.release()


def _frames(path):
    import cv2

    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def test_detect_cli_json_and_save(rt_models, rt_image, tmp_path, capsys):
    from PIL import Image

    Image.fromarray(rt_image).save(tmp_path / "a.png")
    Image.fromarray(rt_image[::-1].copy()).save(tmp_path / "b.jpg")
    (tmp_path / "notes.txt").write_text("ignored: not an image")
    out = tmp_path / "out"
    rc = main(["detect", "--model", rt_models.tflite("int8"), str(tmp_path), "--save", str(out), "--json", "--score", "0.4"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["image"].rsplit("/", 1)[-1] for r in doc["results"]] == ["a.png", "b.jpg"]
    assert doc["runtime"]["backend"] == "litert"
    dets = doc["results"][0]["detections"]
    assert dets and set(dets[0]) == {"box", "score", "class_id", "label"} and all(d["score"] > 0.4 for d in dets)
    assert (out / "a.jpg").is_file() and (out / "b.jpg").is_file()
    drawn = np.asarray(Image.open(out / "a.jpg"))
    assert drawn.shape == rt_image.shape and np.abs(drawn.astype(int) - rt_image).mean() > 0.5  # boxes drawn
    # text output for one image saved to an explicit file name
    rc = main(["detect", "--model", rt_models.tflite("int8"), str(tmp_path / "a.png"), "--save", str(tmp_path / "one.png")])
    text = capsys.readouterr().out
    assert rc == 0 and "a.png:" in text and "detections" in text and (tmp_path / "one.png").is_file()


def test_detect_cli_errors_are_one_line(rt_models, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    assert main(["detect", "--model", rt_models.tflite("int8"), str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgedet: error:") and "bad.jpg" in err and "\n" not in err
    assert main(["detect", "--model", str(tmp_path / "m.h5"), str(bad)]) == 2
    assert "unknown model suffix" in capsys.readouterr().err


def test_camera_headless_on_video(rt_models, tmp_path, capsys):
    video = tmp_path / "clip.avi"
    _write_video(video, frames=8)
    out = tmp_path / "annotated.mp4"
    rc = main(["camera", "--model", rt_models.tflite("int8"), "--source", str(video), "--headless", "--save", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "8 frames" in text and "stopped by end" in text
    assert out.is_file() and _frames(out) == 8
    assert not list(tmp_path.glob("*.tmp*"))  # atomic write left no temp file
    # a folder source and --max-frames
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((60, 80, 3), 30 * i, np.uint8)).save(folder / f"{i}.png")
    assert main(["camera", "--model", rt_models.tflite("int8"), "--source", str(folder), "--headless", "--max-frames", "2"]) == 0
    assert "2 frames" in capsys.readouterr().out


def test_detect_and_camera_refuse_bad_arguments_before_any_work(rt_models, rt_image, tmp_path, capsys):
    from PIL import Image

    model = rt_models.tflite("int8")
    video = tmp_path / "clip.avi"
    _write_video(video, frames=3)
    Image.fromarray(rt_image).save(tmp_path / "a.png")
    (tmp_path / "taken").write_text("a file, not a folder")
    cases = [
        (["camera", "--model", model, "--source", str(video), "--headless", "--save", str(tmp_path / "c.gif")], "saved videos are .mp4 or .avi"),
        (["camera", "--model", model, "--source", str(video), "--headless", "--save", str(tmp_path)], "is a folder"),
        (["detect", "--model", model, str(video), "--save", str(tmp_path / "v.jpg")], "saved videos are .mp4 or .avi"),
        (["detect", "--model", model, str(tmp_path / "a.png"), "--save", str(tmp_path / "one.xyz")], "not an image file name"),
        (["detect", "--model", model, str(tmp_path / "a.png"), str(video), "--save", str(tmp_path / "taken")], "is a file"),
        (["detect", "--model", model, str(video), str(tmp_path / "a.png"), str(tmp_path / "a.png"), "--save", str(tmp_path / "o")],
         "several inputs would be saved as a.jpg"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err and "Traceback" not in err, (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "clip.avi", "taken"]  # nothing written
    for flag, value in (("--score", "1.5"), ("--iou", "-0.1"), ("--max-det", "0"), ("--threads", "0")):
        with pytest.raises(SystemExit) as e:
            main(["detect", "--model", model, str(tmp_path / "a.png"), flag, value])
        assert e.value.code == 2 and f"argument {flag}" in capsys.readouterr().err


def test_detect_skips_an_unreadable_file_in_a_folder_and_keeps_the_source_frame_rate(rt_models, rt_image, tmp_path, capsys):
    import cv2
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(rt_image).save(folder / "a.png")
    (folder / "b.jpg").write_bytes(b"not a jpeg")
    Image.fromarray(rt_image).save(folder / "c.png")
    assert main(["detect", "--model", rt_models.tflite("int8"), str(folder), "--json"]) == 1
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert [r["image"].rsplit("/", 1)[-1] for r in doc["results"]] == ["a.png", "b.jpg", "c.png"]
    assert "b.jpg" in doc["results"][1]["error"] and doc["results"][2]["detections"] == doc["results"][0]["detections"]
    assert "b.jpg" in captured.err and "skipped" in captured.err
    video = tmp_path / "clip.avi"
    _write_video(video, frames=4)  # written at 10 FPS
    assert main(["detect", "--model", rt_models.tflite("int8"), str(video), "--save", str(tmp_path / "out.mp4")]) == 0
    cap = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0)
    cap.release()


def test_camera_survives_dropped_frames_and_interrupt(rt_models, tmp_path):
    from edgedet.runtime.camera import run_camera
    from edgedet.runtime.detector import Detector

    det = Detector.from_file(rt_models.tflite("int8"))
    frame = np.full((90, 120, 3), 100, np.uint8)
    stats = run_camera(det, [frame, None, frame, np.zeros(3), frame], headless=True, save=str(tmp_path / "o.avi"))
    assert stats["frames"] == 3 and stats["dropped"] == 2 and stats["stopped"] == "end"
    assert _frames(tmp_path / "o.avi") == 3

    def interrupted():
        yield frame
        raise KeyboardInterrupt

    stats = run_camera(det, interrupted(), headless=True, save=str(tmp_path / "i.mp4"))
    assert stats["stopped"] == "interrupt" and stats["frames"] == 1 and (tmp_path / "i.mp4").is_file()


def test_pipelined_loop_gives_the_sequential_detections(rt_models, tmp_path, capsys):
    """Reading + pre-processing the next frame during invoke changes nothing in the results."""
    from edgedet.runtime.camera import run_camera
    from edgedet.runtime.frames import FrameSource
    from edgedet.runtime.detector import Detector

    video = tmp_path / "clip.avi"
    _write_video(video, frames=12)
    det = Detector.from_file(rt_models.tflite("int8"), score_threshold=0.05)
    runs = {}
    for sequential in (True, False):
        got = []
        stats = run_camera(det, FrameSource(str(video)), headless=True, sequential=sequential,
                           on_detections=lambda i, d, got=got: got.append((i, d)))
        assert stats["frames"] == 12 and stats["mode"] == ("sequential" if sequential else "pipelined")
        runs[sequential] = got
    assert sum(len(d) for _, d in runs[True]) > 0  # something to compare
    for (i, a), (j, b) in zip(runs[True], runs[False]):
        assert i == j and a.labels == b.labels
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.classes, b.classes)
    # the CLI flag
    assert main(["camera", "--model", rt_models.tflite("int8"), "--source", str(video), "--headless", "--sequential"]) == 0
    assert "12 frames" in capsys.readouterr().out


def test_pipelined_loop_reports_an_error_from_its_worker(rt_models, tmp_path):
    """A failure while decoding/saving on the worker thread stops the loop with that error."""
    from edgedet.runtime.camera import run_camera
    from edgedet.runtime.detector import Detector

    det = Detector.from_file(rt_models.tflite("int8"))
    frame = np.full((90, 120, 3), 100, np.uint8)

    def boom(i, dets):
        if i == 2:
            raise RuntimeError("sink failed")

    with pytest.raises(RuntimeError, match="sink failed"):
        run_camera(det, [frame] * 20, headless=True, on_detections=boom)
