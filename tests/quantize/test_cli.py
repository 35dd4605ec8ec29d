"""``edgedet quantize`` from the command line: bad input (fast) and a QAT run end to end (slow)."""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest


def _main(argv):
    from edgedet.cli import main

    return main(argv)


def test_cli_is_import_light():
    code = ("import sys, edgedet.cli as c; c.build_parser(); "
            "bad = [m for m in ('tensorflow', 'tf_keras', 'tensorflow_model_optimization') if m in sys.modules]; "
            "sys.exit(len(bad))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_qat_of_a_qat_run_is_a_one_line_error(tmp_path, capsys):
    run = tmp_path / "run_qat"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"kind": "qat", "source_run": "/runs/float"}))
    rc = _main(["quantize", "qat", "--weights", str(run), "--out", str(tmp_path / "again")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "already a QAT run" in err and "\n" not in err
    rc = _main(["quantize", "qat", "--weights", str(run)])
    assert rc == 2 and "--out" in capsys.readouterr().err
    assert not (tmp_path / "again").exists()


def test_ptq_small_calibration_set_is_a_one_line_error(float_run_json, synth, capsys):
    rc = _main(["quantize", "ptq", "--weights", str(float_run_json), "--data", str(synth), "--batch", "64"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "fewer than the batch of 64" in err and "\n" not in err


@pytest.fixture()
def float_run_json(tmp_path):
    """A run.json alone (enough for the checks that run before the model loads)."""
    from edgedet.model import get_config

    cfg = get_config("test-lite", num_classes=6, image_size=128)
    (tmp_path / "run.json").write_text(json.dumps({"kind": "float", "model_config": cfg.to_dict()}))
    return tmp_path


@pytest.mark.slow
def test_qat_cli_end_to_end(tmp_path, synth, qhelpers, capsys, monkeypatch):
    """Float run -> `quantize qat` (1 epoch) -> resume -> load_run -> full-integer TFLite."""
    from edgedet import files
    from edgedet.convert.tflite_converter import float_ops, is_qat_model, keras_to_tflite
    from edgedet.runs import load_run
    from edgedet.train.synth import CLASSES

    model, cfg = qhelpers.build_realistic("test-lite", synth)
    run = qhelpers.make_run(tmp_path / "run", model, cfg, CLASSES, synth)
    out = tmp_path / "run_qat"
    # Every run.json the QAT run ever puts in place says "qat": a kill between two writes cannot
    # leave a QAT run that `resume` refuses and `load_run` builds as float.
    kinds, install = [], files.install

    def spy(tmp, final):
        if Path(final).name == "run.json":
            kinds.append(json.loads(Path(tmp).read_text())["kind"])
        install(tmp, final)

    monkeypatch.setattr(files, "install", spy)
    rc = _main(["quantize", "qat", "--weights", str(run), "--out", str(out), "--epochs", "1", "--batch", "4",
                "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    assert kinds and set(kinds) == {"qat"}, kinds
    data = json.loads((out / "run.json").read_text())
    # The calibrated model is evaluated before the first step, as epoch 0; an epoch replaces it
    # as best only with a higher val AP (a short fine-tune that hurts leaves the starting point).
    start = re.search(r"before QAT training \(calibrated ranges\): val AP ([0-9.]+)", capsys.readouterr().err)
    assert start, "no epoch-0 evaluation logged"
    ap1 = float(next(csv.DictReader(open(out / "log.csv")))["val_AP"])
    ap0, best = float(start.group(1)), data["best"]  # ap0 is logged to 3 decimals
    assert best["epoch"] in (0, 1) and best["metrics"]["AP"] == pytest.approx(max(ap0, ap1), abs=6e-4)
    if best["epoch"] == 0:
        assert ap1 <= best["metrics"]["AP"] + 1e-5
    else:
        assert best["metrics"]["AP"] == pytest.approx(ap1, abs=1e-5) and ap1 > ap0 - 6e-4
    assert data["kind"] == "qat" and data["source_run"] == str(run.resolve()) and data["status"] == "done"
    assert data["train"]["lr"] == pytest.approx(0.08 * 4 / 64 / 10) and data["class_names"] == list(CLASSES)
    assert (out / "best.weights.h5").is_file() and (out / "state.npz").is_file()
    assert _main(["quantize", "qat", "--resume", str(out), "--no-progress"]) == 0
    assert "already done" in capsys.readouterr().err
    qat, info = load_run(str(out))  # delegates to edgedet.quantize.qat.load_qat_model
    assert info.kind == "qat" and is_qat_model(qat)
    islands = float_ops(keras_to_tflite(qat, "int8"))
    # The diagnosis of the QAT run lists exactly the float ops the int8 model has: none.
    rc = _main(["quantize", "diagnose", "--weights", str(out), "--data", str(synth), "--no-eval",
                "--out", str(tmp_path / "diag")])
    assert rc == 0
    diag = json.loads((tmp_path / "diag" / "diagnosis.json").read_text())
    assert diag["run_kind"] == "qat" and diag["float_ops"] == islands == []
    assert not diag["selective"]["offered"] and min(diag["outputs"].values()) > 0.99


def test_qat_resume_refuses_options_it_cannot_change_and_counts_must_be_positive(tmp_path, capsys):
    from edgedet.cli import main

    assert main(["quantize", "qat", "--resume", str(tmp_path), "--lr", "5", "--batch", "4"]) == 2
    err = capsys.readouterr().err
    assert "--batch, --lr cannot change them (--epochs can set a new total)" in err and "\n" not in err.strip()
    for argv in (["quantize", "qat", "--weights", "w", "--out", "o", "--epochs", "0"],
                 ["quantize", "ptq", "--weights", "w", "--data", "d", "--calib-count", "0"],
                 ["train", "--data", "d", "--out", "o", "--epochs", "0"],
                 ["pipeline", "--out", "o", "--synth-images", "0"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and "is below 1" in capsys.readouterr().err, argv
