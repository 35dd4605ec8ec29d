"""`edgedet pipeline` end to end on a tiny config and tiny data, killed during training.

The run is SIGKILLed (whole process group, as a machine reset or OOM kill would) once the
trainer has written its first epoch checkpoint; the re-run must skip the finished data stage,
resume training rather than restart it, and finish; a third run must redo nothing and leave
the report byte-identical.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ENV = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")


def _cmd(data: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "edgedet", "pipeline", "--data", str(data), "--model", "test",
        "--image-size", "64", "--epochs", "3", "--qat-epochs", "1", "--batch", "8",
        "--backbone-weights", "none", "--targets", "tflite-fp32,tflite-int8", "--out", str(out),
    ]


def test_pipeline_kill_and_resume(tmp_path):
    data, out = tmp_path / "data", tmp_path / "run"
    subprocess.run([sys.executable, "-m", "edgedet", "data", "synth", str(data), "--num-images", "40",
                    "--image-size", "64"], check=True, env=ENV, capture_output=True)

    # 1) start, wait for the first finished epoch, then kill the whole process group.
    log1 = open(tmp_path / "run1.log", "w")
    proc = subprocess.Popen(_cmd(data, out), env=ENV, stdout=log1, stderr=subprocess.STDOUT, start_new_session=True)
    train_log = out / "2_train" / "log.csv"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if train_log.exists() and len(train_log.read_text().splitlines()) >= 2:
            break
        time.sleep(0.5)
    assert proc.poll() is None, (tmp_path / "run1.log").read_text()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / "1_data" / "manifest.json").exists()
    assert json.loads((out / "2_train" / "manifest.json").read_text())["status"] == "running"  # not done
    data_manifest = (out / "1_data" / "manifest.json").stat().st_mtime_ns

    # 2) re-run: data skipped, training resumed, pipeline completes.
    r2 = subprocess.run(_cmd(data, out), env=ENV, capture_output=True, text=True, timeout=1500)
    assert r2.returncode in (0, 1), r2.stdout[-3000:] + r2.stderr[-3000:]
    assert "[1/5 data] up to date, skipped" in r2.stdout
    assert (out / "1_data" / "manifest.json").stat().st_mtime_ns == data_manifest
    stage_log = (out / "2_train" / "stage.log").read_text()
    assert "--resume" in stage_log
    epochs = [int(row["epoch"]) for row in csv.DictReader(open(train_log))]
    assert epochs == [1, 2, 3], epochs  # resumed from epoch 2, first epoch kept, none redone
    report = out / "5_validate" / "report.json"
    rep = json.loads(report.read_text())
    names = {m["target"] for m in rep["models"]}
    assert {"tflite-fp32", "tflite-int8"} <= names
    assert all(m["status"] in ("pass", "miss") for m in rep["models"]), [m.get("error") for m in rep["models"]]
    assert (out / "5_validate" / "report.html").exists()
    assert "report:" in r2.stdout

    # 3) nothing changed: every stage is skipped and the report is byte-identical.
    before = report.read_bytes()
    r3 = subprocess.run(_cmd(data, out), env=ENV, capture_output=True, text=True, timeout=300)
    assert r3.stdout.count("up to date, skipped") == 5, r3.stdout
    assert report.read_bytes() == before


def test_pipeline_bad_input_one_line_errors(tmp_path):
    base = [sys.executable, "-m", "edgedet", "pipeline", "--out", str(tmp_path / "r")]
    r = subprocess.run(base + ["--data", str(tmp_path / "nope")], env=ENV, capture_output=True, text=True)
    assert r.returncode == 2 and "dataset path does not exist" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run(base + ["--device", "raspbery-pi-4"], env=ENV, capture_output=True, text=True)
    assert r.returncode == 2 and "raspberry-pi-4" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    for bad, message in ((["--model", "bogus"], "unknown model variant 'bogus'"),
                         (["--image-size", "100"], "--image-size 100 is impossible for lite0")):
        r = subprocess.run(base + bad, env=ENV, capture_output=True, text=True)
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "r").exists()  # refused before any stage wrote anything


def test_a_missing_toolchain_is_one_line_before_any_stage(tmp_path, monkeypatch, capsys):
    """A runtime-only install: every module the stages need is checked first, with one install line."""
    from edgedet.cli import main

    monkeypatch.setitem(sys.modules, "tensorflow_model_optimization", None)  # not importable, as there
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    assert main(["pipeline", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "tensorflow_model_optimization, pycocotools" in err and 'pip install "edgedet[all]"' in err
    assert not (tmp_path / "r").exists()
    # train and QAT check theirs before making --out
    monkeypatch.setitem(sys.modules, "tf_keras", None)
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "t")]) == 2
    assert "edgedet train needs the Python module 'tf_keras'" in capsys.readouterr().err
    assert main(["quantize", "qat", "--weights", str(tmp_path), "--data", str(tmp_path), "--out", str(tmp_path / "q")]) == 2
    assert "edgedet quantize qat needs the Python module 'tf_keras'" in capsys.readouterr().err
    assert not (tmp_path / "t").exists() and not (tmp_path / "q").exists()


def test_a_train_run_made_with_other_inputs_is_set_aside_not_resumed(tmp_path, capsys):
    from edgedet.stages import Stage, set_aside_if_changed, with_resume

    cmd = [sys.executable, "-m", "edgedet", "train", "--data", "d", "--image-size", "192", "--out", str(tmp_path / "2_train")]
    new = Stage("train", tmp_path / "2_train", {"cmd": cmd[3:]}, [cmd])
    old = Stage("train", new.folder, {"cmd": [c.replace("192", "128") for c in cmd[3:]]}, [cmd])
    # interrupted with the same inputs: resumed
    new.folder.mkdir()
    (new.folder / "run.json").write_text("{}")
    new.write_manifest(0.0, status="running")
    set_aside_if_changed(new)
    assert with_resume(new, cmd)[3:] == ["train", "--resume", str(new.folder)]
    # made (finished or not) with other options: kept aside, and the stage starts afresh
    old.write_manifest(1.0)
    set_aside_if_changed(new)
    assert not new.folder.exists() and (tmp_path / "2_train.previous" / "run.json").is_file()
    assert with_resume(new, cmd) == cmd
    assert "[train] --image-size changed since" in capsys.readouterr().out


def test_the_same_run_under_another_path_is_still_up_to_date(tmp_path):
    """The run folder moved (or named from another folder): its stages' inputs are the same."""
    from edgedet.stages import Stage

    def stage(run):
        cmd = ["train", "--data", f"{run}/1_data/synth", "--epochs", "2", "--out", f"{run}/2_train"]
        return Stage("train", run / "2_train", {"cmd": cmd, "upstream": {f"{run}/1_data/check.json": "ab12"}}, [cmd])

    assert stage(tmp_path / "runs" / "a").input_hash == stage(tmp_path / "elsewhere" / "b").input_hash
    other = stage(tmp_path / "runs" / "a")
    other.inputs["cmd"][4] = "3"
    assert other.input_hash != stage(tmp_path / "runs" / "a").input_hash


def test_a_finished_stages_outputs_are_named_inside_the_run(tmp_path):
    """The next stage's inputs hold these names: a moved run folder must still match them."""
    import json

    from edgedet.stages import Stage

    for run in (tmp_path / "a", tmp_path / "moved" / "b"):
        (run / "1_data").mkdir(parents=True)
        (run / "1_data" / "check.json").write_text("{}")
        Stage("data", run / "1_data", {}, [], [str(run / "1_data" / "check.json")]).write_manifest(1.0)
    first, second = (json.loads((r / "1_data" / "manifest.json").read_text())["outputs"]
                     for r in (tmp_path / "a", tmp_path / "moved" / "b"))
    assert first == second == {"1_data/check.json": first["1_data/check.json"]}


def test_a_run_made_with_relative_paths_is_still_up_to_date(tmp_path):
    """Run folders written before the paths were absolute name them as typed ("runs/k/2_train")."""
    import json

    from edgedet.stages import Stage

    run = tmp_path / "runs" / "k"
    (run / "2_train").mkdir(parents=True)
    new = Stage("train", run / "2_train", {"cmd": ["train", "--epochs", "2", "--out", f"{run}/2_train"],
                                           "upstream": {"1_data/check.json": "ab12"}}, [])
    old_inputs = {"cmd": ["train", "--epochs", "2", "--out", "runs/k/2_train"],
                  "upstream": {"runs/k/1_data/check.json": "ab12"}}
    (run / "2_train" / "manifest.json").write_text(json.dumps({"status": "done", "input_hash": "0", "inputs": old_inputs}))
    assert new.is_done()
    old_inputs["cmd"][2] = "3"  # another option: not the same run
    (run / "2_train" / "manifest.json").write_text(json.dumps({"status": "done", "input_hash": "0", "inputs": old_inputs}))
    assert not new.is_done()


def test_a_dataset_without_test_images_is_reported_on_val(tmp_path, capsys):
    """A YOLO export with train/ and val/ only: said before training, not a failure after it."""
    from PIL import Image

    from edgedet.cli import build_parser
    from edgedet.pipeline import plan

    ds = tmp_path / "ds"
    for split in ("train", "val"):
        (ds / split / "images").mkdir(parents=True)
        (ds / split / "labels").mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (64, 64), (40 * i, 60, 90)).save(ds / split / "images" / f"{i}.jpg")
            (ds / split / "labels" / f"{i}.txt").write_text("0 0.5 0.5 0.3 0.3\n")
    (ds / "data.yaml").write_text("train: train/images\nval: val/images\nnames: [cell]\n")
    args = build_parser().parse_args(["pipeline", "--data", str(ds), "--model", "test", "--out", str(tmp_path / "p")])
    val_cmd = [str(a) for a in {s.name: s for s in plan(args)}["validate"].commands[0]]
    assert val_cmd[val_cmd.index("--split") + 1] == "val"
    assert "has no test images: the report measures on the val split" in capsys.readouterr().out
