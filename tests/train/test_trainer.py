"""Trainer on tiny real computations: loss goes down, run folder + eval CLI, NaN stop, bad input."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from edgedet.cli import main  # noqa: E402
from edgedet import runs as ckpt  # noqa: E402
from edgedet.train.loop import make_step  # noqa: E402
from edgedet.train.trainer import TrainingDiverged, TrainOptions, Trainer, train  # noqa: E402


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from edgedet.train.synth import write_synth

    out = tmp_path_factory.mktemp("data") / "synth"
    write_synth(out, num_images=30, image_size=64, seed=0)
    return out


def _opts(data, out, **kw):
    base = dict(data=str(data), out=str(out), model="test", image_size=64, batch=4, epochs=2, backbone_weights=None,
                progress=False, warmup_epochs=0.5)
    base.update(kw)
    return TrainOptions(**base)


@pytest.fixture(scope="module")
def trained_run(synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    train(_opts(synth, out, epochs=2, lr=0.02), log=lambda m: None)
    return out


def test_a_few_steps_reduce_the_loss(synth, tmp_path):
    from edgedet.train.input import make_dataset

    tr = Trainer(_opts(synth, tmp_path / "r", lr=0.05), log=lambda m: None)
    tr._load_data()
    tr._build(None)
    step = make_step(tr)
    cfg = tr.cfg
    images, targets = next(iter(make_dataset(tr.train_samples[:4], image_size=64, num_classes=cfg.num_classes,
                                             mean=cfg.mean, std=cfg.std, anchor_config=cfg.anchor_config,
                                             batch_size=4, training=False)))
    losses = []
    for i in range(12):
        tr._set_bn_momentum(i)
        losses.append(float(step(images, targets)["loss"]))
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.85 * losses[0], losses
    assert int(tr.ema.num_updates.numpy()) == 12
    # BN statistics are warm-started: after 12 steps the inference-mode model (moving statistics)
    # scores this batch about as well as the training-mode one. With a fixed 0.99 momentum the
    # moving variances would still be ~0.89 x their init of 1 instead of the heads' ~1e-3.
    from edgedet.train.losses import detection_loss

    infer = float(detection_loss(tr.model(images, training=False), targets["cls"], targets["box"],
                                 cfg.num_classes)["loss"])
    assert infer < 1.3 * losses[-1], (infer, losses[-1])


def test_run_folder_load_run_and_eval_cli(trained_run, capsys):
    for name in ("run.json", "best.weights.h5", "last.weights.h5", "state.npz", "log.csv"):
        assert (trained_run / name).is_file(), name
    assert any((trained_run / "tb").iterdir())
    data = json.loads((trained_run / "run.json").read_text())
    assert data["kind"] == "float" and data["epochs_done"] == 2 and data["status"] == "done"
    assert data["variant"] == "test" and data["image_size"] == 64 and len(data["class_names"]) == data["num_classes"]
    assert "AP" in data["best"]["metrics"]
    rows = (trained_run / "log.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("epoch,step,loss")
    model, info = ckpt.load_run(trained_run)
    assert info.kind == "float" and info.class_names == data["class_names"] and len(info.weights_sha256) == 64
    assert model.output_shape[0][-1] == 9 * info.config.num_classes
    rc = main(["eval", "--weights", str(trained_run), "--split", "test", "--json"])
    assert rc == 0
    m = json.loads(capsys.readouterr().out)
    for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "per_class"):
        assert k in m
    assert set(m["per_class"]) == set(info.class_names)
    # the same numbers through the human-readable report
    assert main(["eval", "--weights", str(trained_run), "--split", "test", "--soft-nms"]) == 0
    out = capsys.readouterr().out
    assert "AP50" in out and info.class_names[0] in out


def test_existing_run_is_not_overwritten(trained_run, synth, capsys):
    rc = main(["train", "--data", str(synth), "--model", "test", "--out", str(trained_run), "--backbone-weights", "none"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert "already holds a run" in err and "--resume" in err and len(err.splitlines()) == 1


def test_nan_loss_stops_and_keeps_last_good_checkpoint(trained_run, tmp_path):
    run = tmp_path / "nan_run"
    shutil.copytree(trained_run, run)
    data = json.loads((run / "run.json").read_text())
    data["train"].update(lr=1e12, warmup_epochs=0)
    (run / "run.json").write_text(json.dumps(data))
    before = {n: ckpt.sha256_file(run / n) for n in ("best.weights.h5", "last.weights.h5", "state.npz")}
    from edgedet.train.trainer import resume_options

    with pytest.raises(TrainingDiverged) as exc:
        train(resume_options(run), resume=True, log=lambda m: None, epochs=3)
    msg = str(exc.value)
    assert "nan" in msg.lower() and "epoch 3" in msg and "--lr" in msg and "\n" not in msg
    assert {n: ckpt.sha256_file(run / n) for n in before} == before
    assert ckpt.load_state(run / "state.npz")[1]["epochs_done"] == 2


def test_empty_dataset_and_missing_image_dir_are_one_line_errors(tmp_path, capsys):
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    assert main(["train", "--data", str(empty), "--model", "test", "--out", str(tmp_path / "r1")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgedet: error:") and "empty" in err and len(err.splitlines()) == 1
    voc = tmp_path / "voc"
    (voc / "Annotations").mkdir(parents=True)
    (voc / "Annotations" / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename><size><width>10</width><height>10</height></size>"
        "<object><name>x</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox>"
        "</object></annotation>")
    assert main(["train", "--data", str(voc), "--model", "test", "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err.strip()
    assert "JPEGImages" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r1" / "run.json").exists()


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(synth, tmp_path):
    script = textwrap.dedent(f"""
        import os, json
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from edgedet.train.input import make_dataset
        from edgedet.train.loop import make_step
        from edgedet.train.trainer import TrainOptions, Trainer, train
        from edgedet import runs as ckpt

        def opts(out, epochs):
            return TrainOptions(data={str(synth)!r}, out=out, model="test", image_size=64, batch=4, epochs=epochs,
                                backbone_weights=None, progress=False, strategy="mirrored", lr=0.05)

        # 1) the distributed step on one fixed global batch (2 images per replica) learns
        tr = Trainer(opts({str(tmp_path / 'steps')!r}, 50), log=print)
        tr._load_data(); tr._build(None)
        step = make_step(tr)
        cfg = tr.cfg
        ds = make_dataset(tr.train_samples[:4], image_size=64, num_classes=cfg.num_classes, mean=cfg.mean, std=cfg.std,
                          anchor_config=cfg.anchor_config, batch_size=4, training=False)
        images, targets = next(iter(tr.strategy.experimental_distribute_dataset(ds)))
        losses = []
        for i in range(10):
            tr._set_bn_momentum(i)
            losses.append(float(step(images, targets)["loss"]))
        # 2) the whole loop (checkpoints, EMA swap, eval) under the strategy
        best = train(opts({str(tmp_path / 'm')!r}, 1), log=print)
        info = ckpt.read_run_json({str(tmp_path / 'm')!r})
        print("RESULT", json.dumps({{"replicas": tr.replicas, "losses": losses, "epochs_done": info["epochs_done"],
                                     "best": best}}))
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "2 replica(s)" in p.stdout
    res = json.loads(p.stdout.split("RESULT", 1)[1])
    assert res["replicas"] == 2
    assert all(np.isfinite(res["losses"])) and res["losses"][-1] < 0.85 * res["losses"][0], res["losses"]
    assert res["epochs_done"] == 1 and "AP" in res["best"]["metrics"]
    model, info = ckpt.load_run(tmp_path / "m")
    assert info.kind == "float" and model.output_shape[0][-1] == 9 * info.config.num_classes


def test_time_limit_plans_with_the_mean_epoch_not_the_last_one():
    from edgedet.train.schedule import plan_epochs

    # 5 epochs done in 60 s of a 4-minute budget; the last epoch stalled (14 s vs 8 s)
    fit, per_epoch = plan_epochs(4.0, 5, 60.0, [8.0, 8.0, 8.0, 8.0, 14.0], eval_s=2.0, eval_every=10)
    assert per_epoch == pytest.approx(9.2 + 0.2)
    assert fit == 5 + int((240 - 60 - 2) // 9.4)  # 23, where the last epoch alone (14.2 s) allows 17
    # out of time: no further epochs, never fewer than done
    assert plan_epochs(1.0, 7, 70.0, [10.0], eval_s=0.0)[0] == 7


def test_a_killed_extension_is_resumed_to_its_new_total_and_a_done_run_says_done(trained_run, tmp_path):
    """`--resume RUN --epochs 5` killed before its first new epoch ended: run.json says 5 and
    'running'; a plain --resume afterwards aims for 5, and a run with nothing left says done."""
    from edgedet.train.trainer import resume_epochs, resume_options

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    data = json.loads((run / "run.json").read_text())
    assert resume_epochs(run, None) == data["epochs"] == 2 and resume_epochs(run, 7) == 7
    (run / "run.json").write_text(json.dumps(dict(data, epochs=5, status="running")))
    assert resume_epochs(run, None) == 5
    (run / "run.json").write_text(json.dumps(dict(data, status="running")))  # killed after its last epoch
    train(resume_options(run), resume=True, log=lambda m: None, epochs=resume_epochs(run, None))
    assert json.loads((run / "run.json").read_text())["status"] == "done"
