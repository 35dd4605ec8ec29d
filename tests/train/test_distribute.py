"""Cluster descriptions, strategy flags and the mixed-precision step (the multi-worker runs: test_multiworker.py)."""
from __future__ import annotations

import argparse
import json
import math
import os

import pytest

from edgedet.errors import ConfigError
from edgedet.train import distribute as d


def test_workers_flag_writes_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    p = argparse.ArgumentParser()
    d.add_arguments(p)
    args = p.parse_args(["--workers", "10.0.0.1:2222,10.0.0.2:2222", "--worker-index", "1"])
    d.apply_arguments(args)
    assert args.strategy == "multiworker"
    cfg = json.loads(os.environ["TF_CONFIG"])
    assert cfg == {"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]}, "task": {"type": "worker", "index": 1}}
    c = d.cluster_from_env()
    assert not c.is_chief and c.address == "10.0.0.2:2222" and c.peers == ["10.0.0.1:2222"] and c.num_workers == 2


def test_chief_job_and_bad_cluster_descriptions():
    env = {"TF_CONFIG": json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:2"]}, "task": {"type": "chief"}})}
    c = d.cluster_from_env(env)
    assert c.is_chief and c.peers == ["b:2"]
    for bad, word in [({}, "TF_CONFIG is not set"), ({"TF_CONFIG": "{"}, "not a valid cluster"),
                      ({"TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}})},
                       "not a valid cluster")]:
        with pytest.raises(ConfigError, match=word) as exc:
            d.cluster_from_env(bad)
        assert "\n" not in str(exc.value)
    for text in ("a:1", "a:1,b", "a:1,a:1", "a:1,b:99999"):
        with pytest.raises(ConfigError, match="--workers"):
            d.parse_workers(text)
    with pytest.raises(ConfigError, match="--worker-index 2"):
        d.tf_config(["a:1", "b:2"], 2)
    p = argparse.ArgumentParser()
    d.add_arguments(p)
    with pytest.raises(ConfigError, match="--worker-index"):
        d.apply_arguments(p.parse_args(["--workers", "a:1,b:2"]))
    with pytest.raises(ConfigError, match="not mirrored"):
        d.apply_arguments(p.parse_args(["--workers", "a:1,b:2", "--worker-index", "0", "--strategy", "mirrored"]))


@pytest.mark.slow
def test_mixed_precision_step_learns(tmp_path, monkeypatch):
    """The float16 step (loss scaling, float32 outputs and weights) as it runs where a GPU is visible."""
    tf = pytest.importorskip("tensorflow")
    import tf_keras as keras

    from edgedet.train.input import make_dataset
    from edgedet.train.loop import make_step
    from edgedet.train.synth import write_synth
    from edgedet.train.trainer import Trainer, TrainOptions

    write_synth(tmp_path / "s", num_images=12, image_size=64, seed=0)
    notes = []
    on = d.set_mixed_precision(True, log=notes.append)
    d.set_mixed_precision(False)
    gpu = bool(tf.config.list_physical_devices("GPU"))
    assert on is gpu and (gpu or notes == ["--mixed-precision: no GPU visible; training in float32"])
    # This machine may have no GPU: take the GPU branch of the policy choice.
    monkeypatch.setattr(d, "set_mixed_precision",
                        lambda on, log=None: keras.mixed_precision.set_global_policy("mixed_float16" if on else "float32")
                        or on)
    tr = Trainer(TrainOptions(data=str(tmp_path / "s"), out=str(tmp_path / "r"), model="test", image_size=64, batch=4,
                              backbone_weights=None, progress=False, mixed_precision=True, lr=0.05), log=lambda m: None)
    tr._load_data()
    tr._build(None)
    assert tr.mixed and type(tr.optimizer).__name__.startswith("LossScaleOptimizer")
    assert tr.model.get_layer("class_net_predict_pw").dtype_policy.name == "mixed_float16"
    assert all(v.dtype == "float32" for v in tr.model.weights)  # saved weights stay float32
    assert keras.mixed_precision.global_policy().name == "float32"  # later models (evaluation, export) are not float16
    import json

    tr.out.mkdir(parents=True, exist_ok=True)
    tr._write_run_json(0, {}, "running")  # run.json says what ran, beside what was asked
    run = json.loads((tr.out / "run.json").read_text())
    assert run["precision"] == "mixed_float16" and run["train"]["mixed_precision"] is True
    cfg = tr.cfg
    images, targets = next(iter(make_dataset(tr.train_samples[:4], image_size=64, num_classes=cfg.num_classes,
                                             mean=cfg.mean, std=cfg.std, anchor_config=cfg.anchor_config,
                                             batch_size=4, training=False)))
    step = make_step(tr)
    losses = []
    for i in range(5):
        tr._set_bn_momentum(i)
        losses.append(float(step(images, targets)["loss"]))
    assert all(map(math.isfinite, losses)) and losses[-1] < losses[0], losses


def test_the_lost_worker_reason_is_the_cause_not_tensorflows_header():
    from edgedet.train.distribute import cluster_error_reason

    text = ("Graph execution error:\n\nDetected at node CollectiveReduceV2 defined at (most recent call last):\n"
            '  File "/x/train/loop.py", line 88, in train_epoch\n\n'
            "Collective ops is aborted by: failed to connect to all addresses; Connection refused\n"
            "The error could be from a previous operation. Restart your program to reset.\n"
            "\t [[{{node CollectiveReduceV2}}]] [Op:__inference_step_123]")
    assert cluster_error_reason(RuntimeError(text)).startswith("Collective ops is aborted by: failed to connect")
    assert cluster_error_reason(RuntimeError("Graph execution error:\n\nsomething odd")) == "something odd"
