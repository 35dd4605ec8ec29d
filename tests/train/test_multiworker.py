"""Multi-worker training on 127.0.0.1: a chief and a worker process, each with its own TF_CONFIG.

Real MultiWorkerMirroredStrategy collectives over gRPC on CPU; a tiny model on a tiny synthetic dataset.
"""
from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib adds no test folder itself
from killing import kill_mid_epoch  # noqa: E402

pytest.importorskip("tensorflow")

pytestmark = pytest.mark.slow

EPOCHS, BATCH = 2, 4


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from edgedet.train.synth import write_synth

    out = tmp_path_factory.mktemp("mw") / "synth"
    write_synth(out, num_images=44, image_size=64, seed=3)  # 33 train images: 8 steps of 4 per epoch
    return out


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _train_args(data, out, *extra) -> list[str]:
    return ["train", "--data", str(data), "--model", "test", "--image-size", "64", "--epochs", str(EPOCHS),
            "--batch", str(BATCH), "--backbone-weights", "none", "--lr", "0.02", "--seed", "5", "--out", str(out),
            *extra]


def _env(tmp: Path, **extra) -> dict:
    tmp.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", TMPDIR=str(tmp),
               TF_ENABLE_ONEDNN_OPTS="0")  # plain Eigen kernels: less layout-dependent rounding
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _worker(data, out, workers: list[str], index: int, tmp: Path, *extra, **popen):
    """One worker: its own process and TF_CONFIG (written by --workers/--worker-index)."""
    cmd = [sys.executable, "-m", "edgedet", *_train_args(data, out, "--strategy", "multiworker", "--workers",
                                                         ",".join(workers), "--worker-index", str(index), *extra)]
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(cmd, env=_env(tmp), text=True, **popen)


# A single process with the same global batch, split over 2 replicas (2 logical CPUs) as the 2 workers split it.
_SINGLE = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from edgedet.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _rows(run: Path) -> list[dict]:
    with open(run / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_two_workers_train_like_one_process(data, tmp_path):
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    chief_out, worker_out, single_out = tmp_path / "run", tmp_path / "worker_run", tmp_path / "single"
    procs = [_worker(data, chief_out, workers, 0, tmp_path / "tmp0", "--no-progress"),
             _worker(data, worker_out, workers, 1, tmp_path / "tmp1", "--no-progress"),
             subprocess.Popen([sys.executable, "-c", _SINGLE, *_train_args(data, single_out, "--strategy", "mirrored",
                                                                           "--no-progress")],
                              env=_env(tmp_path / "tmp2"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, "\n-----\n".join(e[-2500:] for _, e in outs)
    assert "worker 0 of 2" in outs[0][1] and "worker 1 of 2" in outs[1][1] and "2 replica(s)" in outs[2][1]
    # Only the chief writes the run folder; the worker's scratch folder is gone.
    for name in ("run.json", "state.npz", "best.weights.h5", "last.weights.h5", "log.csv"):
        assert (chief_out / name).is_file(), name
    assert any((chief_out / "tb").iterdir())
    assert not worker_out.exists()
    assert not list((tmp_path / "tmp1").glob("edgedet-*"))
    run = json.loads((chief_out / "run.json").read_text())
    assert run["status"] == "done" and run["epochs_done"] == EPOCHS and run["train"]["strategy"] == "multiworker"
    # Same global batch and seed, and each worker gets the half of every batch that the single process's
    # replica of the same rank gets: the same arithmetic (BatchNorm statistics per replica over 2 images,
    # the loss normalised by the global number of positives, the 2 gradients summed). What differs is
    # float32 rounding: reduction order follows the thread layout (one device per process here, two
    # logical devices sharing one process there), and 16 SGD steps with 2-image BatchNorm grow those
    # last bits. oneDNN's kernels (TensorFlow's default on x86) make the order depend on the CPU too:
    # with them the epoch-2 losses differed by 0.2-0.3 % on an AVX2 CPU and 1.0 % on an AVX-512 one,
    # so the test runs the plain Eigen kernels (TF_ENABLE_ONEDNN_OPTS=0): 0.03 % and 0.23 % measured.
    # Allowed: 1 %, which still tells a wrong split apart (one replica with BatchNorm over all 4 images
    # differs by 2-4 %).
    multi, single = _rows(chief_out), _rows(single_out)
    assert [r["step"] for r in multi] == [r["step"] for r in single] == ["8", "16"]
    for m, s in zip(multi, single):
        assert float(m["loss"]) == pytest.approx(float(s["loss"]), rel=1e-2), (m, s)
        assert float(m["lr"]) == pytest.approx(float(s["lr"]), rel=1e-6)


def test_killed_worker_then_rerun_continues_from_the_chiefs_checkpoint(data, tmp_path):
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    out = tmp_path / "run"
    chief = _worker(data, out, workers, 0, tmp_path / "tmp0", "--no-progress")
    victim = _worker(data, tmp_path / "w", workers, 1, tmp_path / "tmp1", stdout=subprocess.DEVNULL, bufsize=0)
    seen = kill_mid_epoch(victim, 2, EPOCHS, 8, timeout=900)
    victim.wait(timeout=60)
    assert seen, "never saw epoch 2 in progress"
    # The chief notices within the heartbeat timeout and stops with a one-line error, at once:
    # not after TensorFlow's shutdown barrier has waited for the dead worker (1.5-2 min).
    t0 = time.time()
    _, err = chief.communicate(timeout=180)
    assert chief.returncode == 2 and time.time() - t0 < 75, (chief.returncode, time.time() - t0)
    last = err.strip().splitlines()[-1]
    assert last.startswith("edgedet: error:") and "re-run the same command" in last, err[-2000:]
    assert [r["epoch"] for r in _rows(out)] == ["1"]
    epoch1 = _rows(out)[0]
    # The same two commands again: the run continues after epoch 1.
    procs = [_worker(data, out, workers, 0, tmp_path / "tmp0", "--no-progress"),
             _worker(data, tmp_path / "w", workers, 1, tmp_path / "tmp1", "--no-progress")]
    outs = [p.communicate(timeout=900) for p in procs]
    both = "\n-----\n".join(e[-2500:] for _, e in outs)
    for p, (_, e) in zip(procs, outs):
        assert p.returncode == 0, both
        assert f"after epoch 1/{EPOCHS}" in e, both
    rows = _rows(out)
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows[0] == epoch1  # epoch 1 is not repeated
    assert [r["step"] for r in rows] == ["8", "16"]
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "done" and run["epochs_done"] == EPOCHS


def test_wrong_address_fails_within_a_minute_with_one_line(data, tmp_path):
    nobody, me = _free_ports(2)
    t0 = time.time()
    p = _worker(data, tmp_path / "run", [f"127.0.0.1:{nobody}", f"127.0.0.1:{me}"], 1, tmp_path / "tmp",
                "--no-progress")
    _, err = p.communicate(timeout=120)
    took = time.time() - t0
    assert p.returncode == 2 and took < 60, (p.returncode, took, err[-2000:])
    errors = [line for line in err.splitlines() if line.startswith("edgedet: error:")]
    assert len(errors) == 1 and f"cannot reach 127.0.0.1:{nobody}" in errors[0], err[-2000:]
    assert err.strip().splitlines()[-1] == errors[0]
    assert not list((tmp_path / "tmp").glob("edgedet-worker*"))  # its scratch folder goes too


def test_a_chief_whose_worker_never_starts_ends_with_one_line(data, tmp_path):
    """The chief waits inside TensorFlow with the GIL held: its outside watcher ends it."""
    me, nobody = _free_ports(2)
    t0 = time.time()
    p = _worker(data, tmp_path / "run", [f"127.0.0.1:{me}", f"127.0.0.1:{nobody}"], 0, tmp_path / "tmp",
                "--no-progress", "--connect-timeout", "5")
    _, err = p.communicate(timeout=120)
    took = time.time() - t0
    assert p.returncode != 0 and took < 60, (p.returncode, took, err[-2000:])
    errors = [line for line in err.splitlines() if line.startswith("edgedet: error:")]
    assert len(errors) == 1 and f"cannot reach 127.0.0.1:{nobody} within 5 s" in errors[0], err[-2000:]
