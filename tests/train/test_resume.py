"""SIGKILL a tiny training run mid-epoch, --resume it, and compare with an uninterrupted run."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib adds no test folder itself
from killing import kill_mid_epoch  # noqa: E402

pytest.importorskip("tensorflow")

EPOCHS, STEPS = 3, 10


def _cmd(data, out, *extra):
    return [sys.executable, "-m", "edgedet", "train", "--data", str(data), "--model", "test", "--image-size", "64",
            "--epochs", str(EPOCHS), "--batch", "2", "--backbone-weights", "none", "--lr", "0.02",
            "--out", str(out), *extra]


def _env():
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env.pop("TQDM_DISABLE", None)
    return env


def _rows(run: Path) -> list[dict]:
    with open(run / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    from edgedet.train.synth import write_synth

    data = tmp_path / "synth"
    write_synth(data, num_images=28, image_size=64, seed=1)  # 20 train images -> 10 steps of 2
    full, killed = tmp_path / "full", tmp_path / "killed"
    # The uninterrupted reference runs alongside the run we kill (saves wall time on CI).
    ref = subprocess.Popen(_cmd(data, full, "--no-progress"), env=_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    # --data as typed relative to where training started; the resume runs from another folder
    victim = subprocess.Popen(_cmd("synth", killed), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, bufsize=0, cwd=tmp_path)
    seen = kill_mid_epoch(victim, 2, EPOCHS, STEPS, timeout=1500)
    victim.wait(timeout=60)
    assert seen, "never saw epoch 2 in progress"
    assert victim.returncode == -signal.SIGKILL
    # the kill left exactly one finished epoch, and only complete files
    assert [r["epoch"] for r in _rows(killed)] == ["1"]
    assert json.loads((killed / "run.json").read_text())["epochs_done"] == 1
    assert not [p.name for p in killed.iterdir() if ".tmp" in p.name]
    epoch1 = _rows(killed)[0]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = subprocess.run([sys.executable, "-m", "edgedet", "train", "--resume", str(killed), "--no-progress"],
                         env=_env(), capture_output=True, text=True, timeout=1500, cwd=elsewhere)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resuming" in res.stderr and "after epoch 1/3" in res.stderr
    out_ref, err_ref = ref.communicate(timeout=1500)
    assert ref.returncode == 0, err_ref[-3000:]

    rows_k, rows_f = _rows(killed), _rows(full)
    assert [r["epoch"] for r in rows_k] == ["1", "2", "3"]
    assert rows_k[0] == epoch1  # the finished epoch is kept as it was
    assert [r["step"] for r in rows_k] == [r["step"] for r in rows_f] == [str(STEPS * i) for i in (1, 2, 3)]
    # same seed, same data order and augmentation: epoch 1 is the same run; later epochs equal within noise
    assert float(rows_k[0]["loss"]) == pytest.approx(float(rows_f[0]["loss"]), rel=1e-3)
    for rk, rf in zip(rows_k[1:], rows_f[1:]):
        assert float(rk["loss"]) == pytest.approx(float(rf["loss"]), rel=0.1)
        assert float(rk["lr"]) == pytest.approx(float(rf["lr"]), rel=1e-6)  # schedule continued, not restarted
    run_k = json.loads((killed / "run.json").read_text())
    run_f = json.loads((full / "run.json").read_text())
    assert run_k["status"] == run_f["status"] == "done" and run_k["epochs_done"] == run_f["epochs_done"] == 3
    assert float(rows_k[-1]["val_AP50"]) == pytest.approx(float(rows_f[-1]["val_AP50"]), abs=0.1)
    assert float(rows_k[-1]["val_AP"]) == pytest.approx(float(rows_f[-1]["val_AP"]), abs=0.05)


@pytest.mark.slow
def test_ctrl_c_mid_epoch_says_interrupted_in_one_line_and_in_run_json(tmp_path):
    from edgedet.train.synth import write_synth

    data = tmp_path / "synth"
    write_synth(data, num_images=28, image_size=64, seed=1)
    out = tmp_path / "run"
    proc = subprocess.Popen(_cmd(data, out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, bufsize=0)
    seen = kill_mid_epoch(proc, 2, EPOCHS, STEPS, timeout=1500, sig=signal.SIGINT)
    rest = proc.stderr.read()
    proc.wait(timeout=120)
    assert seen, "never saw epoch 2 in progress"
    assert proc.returncode == 130 and "edgedet: interrupted" in rest and "Traceback" not in rest, rest[-2000:]
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "interrupted" and run["epochs_done"] == 1
