"""google/automl checkpoints: exact outputs on the reference fixtures, EMA taken, class-count change,
one error for unmappable variables, archives and the official-name download path."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from edgedet.cli import main  # noqa: E402
from edgedet.errors import ConfigError, ModelFileError  # noqa: E402

NAMES = [f"class_p{i}" for i in range(3, 8)] + [f"box_p{i}" for i in range(3, 8)]


def _reference_dir(name: str) -> Path:
    import os

    shared = Path(os.environ.get("EDGEDET_SHARED", Path(__file__).resolve().parents[3] / "shared"))
    path = shared / "reference" / "automl" / f"efficientdet-{name}"
    if not (path / "model.index").is_file():
        pytest.skip(f"{path} not present")
    return path


def write_automl_checkpoint(folder: Path, entries: dict[str, np.ndarray], prefix: str = "model") -> Path:
    """A TF1 name-based checkpoint (TensorBundle) with exactly ``entries``, as automl's Saver writes one."""
    import tensorflow as tf

    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(entries)
    tf.raw_ops.SaveV2(prefix=str(folder / prefix), tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(entries[n]) for n in names])
    (folder / "checkpoint").write_text(f'model_checkpoint_path: "{prefix}"\nall_model_checkpoint_paths: "{prefix}"\n')
    return folder


@pytest.fixture(scope="module")
def lite0_ckpt(tmp_path_factory):
    """An official-format Lite0 checkpoint (90 classes) made from a random model of ours.

    Every weight is stored raw and as its EMA shadow; the two differ, so the test sees which one
    the importer takes. Returns ``(folder, ema values by name)``.
    """
    import tensorflow as tf

    from edgedet.model import build_model, get_config
    from edgedet.model.automl_import import weight_names

    tf.keras.utils.set_random_seed(3)
    cfg = get_config("lite0", image_size=64)
    model = build_model(cfg)
    rng = np.random.default_rng(0)
    ema, entries = {}, {"global_step": np.array(0, np.int64)}
    for w, names in zip(model.weights, weight_names(model, cfg)):
        value = w.numpy() + rng.normal(0, 0.01, w.shape).astype(np.float32)
        for i, name in enumerate(names):
            ema[name] = value[i] if len(names) > 1 else value
            entries[name] = ema[name] + np.float32(1.0)
            entries[name + "/ExponentialMovingAverage"] = ema[name]
    folder = write_automl_checkpoint(tmp_path_factory.mktemp("ckpt") / "efficientdet-lite0", entries)
    return folder, ema


@pytest.mark.shared
@pytest.mark.parametrize("name", ["lite0", pytest.param("d0", marks=pytest.mark.slow)])
def test_reference_outputs_match_automl(name):
    """Raw class logits and box deltas equal automl's own on its checkpoint, every level (no permutation)."""
    from edgedet.model.automl_import import AutomlCheckpoint
    from edgedet.model.efficientdet import build_model

    folder = _reference_dir(name)
    src = AutomlCheckpoint(str(folder))
    assert (src.variant, src.num_classes, src.ema) == (name, 90, True)
    cfg = src.config()
    model = build_model(cfg)
    src.load_into(model, cfg)
    ref = np.load(folder / "outputs.npz")
    outs = model(np.load(folder / "input.npy"), training=False)
    for out_name, got in zip(NAMES, outs):
        diff = float(np.max(np.abs(got.numpy() - ref[out_name])))
        assert diff <= 1e-4, (name, out_name, diff)


def test_ema_weights_are_taken_and_run_folder_loads(lite0_ckpt, tmp_path, capsys):
    from edgedet.model.automl_import import weight_names
    from edgedet.runs import load_run

    folder, ema = lite0_ckpt
    out = tmp_path / "run"
    assert main(["import", "automl", str(folder), "--out", str(out), "--image-size", "64"]) == 0
    assert "imported efficientdet-lite0" in capsys.readouterr().out
    data = json.loads((out / "run.json").read_text())
    assert data["variant"] == "lite0" and data["num_classes"] == 90 and data["class_names"][0] == "person"
    assert data["imported"]["ema"] and data["imported"]["class_predict"] == "imported"
    model, info = load_run(out)
    for w, names in zip(model.weights, weight_names(model, info.config)):
        want = np.stack([ema[n] for n in names]) if len(names) > 1 else ema[names[0]]
        np.testing.assert_array_equal(w.numpy(), want, err_msg=names[0])


@pytest.mark.slow
def test_three_classes_keep_all_but_class_predict_and_fine_tune(lite0_ckpt, tmp_path):
    """--init automl: with a 3-class dataset: every other weight imported, the step trains."""
    import tensorflow as tf

    from edgedet.model.automl_import import weight_names
    from edgedet.train.input import make_dataset
    from edgedet.train.synth import write_synth
    from edgedet.train.trainer import Trainer, TrainOptions

    folder, ema = lite0_ckpt
    data = tmp_path / "synth"
    write_synth(data, num_images=8, image_size=64, seed=0)
    for ann in (data / "annotations").glob("*.json"):  # fold the 6 shapes onto 3 classes
        coco = json.loads(ann.read_text())
        coco["categories"] = coco["categories"][:3]
        for a in coco["annotations"]:
            a["category_id"] = (a["category_id"] - 1) % 3 + 1
        ann.write_text(json.dumps(coco))
    lines: list[str] = []
    opts = TrainOptions(data=str(data), out=str(tmp_path / "r"), model="d0", image_size=64, batch=2, epochs=1,
                        backbone_weights="imagenet", init=f"automl:{folder}", progress=False)
    tr = Trainer(opts, log=lines.append)
    tr._load_data()
    tr._build(None)
    assert tr.cfg.name == "lite0" and opts.model == "lite0"  # the variant comes from the checkpoint
    assert tr.cfg.num_classes == 3
    assert sum("except class-predict" in line for line in lines) == 1
    fresh = 0
    for w, names in zip(tr.model.weights, weight_names(tr.model, tr.cfg)):
        if names[0].startswith("class_net/class-predict/") and "depthwise" not in names[0]:
            fresh += 1
            assert w.shape[-1] == 9 * 3
            continue
        want = np.stack([ema[n] for n in names]) if len(names) > 1 else ema[names[0]]
        np.testing.assert_array_equal(w.numpy(), want, err_msg=names[0])
    assert fresh == 2  # pointwise kernel and bias; the predictor's depthwise kernel is kept
    cfg = tr.cfg
    images, targets = next(iter(make_dataset(tr.train_samples[:2], image_size=64, num_classes=3, mean=cfg.mean,
                                             std=cfg.std, anchor_config=cfg.anchor_config, batch_size=2,
                                             training=False)))
    before = tr.model.get_layer("class_net_predict_pw").kernel.numpy().copy()
    tr._set_bn_momentum(0)
    assert float(tr.bn_momentum.numpy()) == pytest.approx(0.99)  # imported BN statistics are not warm-started
    from edgedet.train.loop import make_step

    loss = float(make_step(tr)(images, targets)["loss"])
    assert np.isfinite(loss)
    assert not np.array_equal(before, tr.model.get_layer("class_net_predict_pw").kernel.numpy())
    assert tf.reduce_all(tf.math.is_finite(tr.model.weights[0]))


def test_missing_or_renamed_variable_is_one_error_and_writes_nothing(lite0_ckpt, tmp_path, capsys):
    import tensorflow as tf

    folder, _ = lite0_ckpt
    reader = tf.train.load_checkpoint(str(folder / "model"))
    entries = {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}
    gone = "fpn_cells/cell_1/fnode3/op_after_combine8/bn/gamma"
    renamed = "box_net/box-1-bn-5/beta"
    for suffix in ("", "/ExponentialMovingAverage"):
        del entries[gone + suffix]
        entries[renamed.replace("beta", "betta") + suffix] = entries.pop(renamed + suffix)
    broken = write_automl_checkpoint(tmp_path / "broken", entries)
    out = tmp_path / "run"
    assert main(["import", "automl", str(broken), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("edgedet: error:")
    assert gone in err and renamed in err and "box_net/box-1-bn-5/betta" in err
    assert not out.exists()


def test_archive_is_extracted_safely_and_variant_inferred(lite0_ckpt, tmp_path, monkeypatch):
    from edgedet.model.automl_fetch import resolve

    monkeypatch.setenv("EDGEDET_CACHE", str(tmp_path / "cache"))
    folder, _ = lite0_ckpt
    archive = tmp_path / "efficientdet-lite0.tgz"
    evil = tmp_path / "evil.py"
    evil.write_text("raise SystemExit('executed')\n")
    with tarfile.open(archive, "w:gz") as tar:
        for f in sorted(folder.iterdir()):
            tar.add(f, arcname=f"efficientdet-lite0/{f.name}")
        tar.add(evil, arcname="efficientdet-lite0/evil.py")
    prefix, hint = resolve(f"automl:{archive}")
    assert hint == "efficientdet-lite0.tgz" and prefix.name == "model"
    assert sorted(p.name for p in prefix.parent.iterdir()) == ["checkpoint", "model.data-00000-of-00001",
                                                              "model.index"]
    assert resolve(str(archive))[0] == prefix  # unpacked once per archive content


def test_download_stores_and_then_verifies_the_checksum(lite0_ckpt, tmp_path, monkeypatch, capsys):
    """The download path on a local file:// address: progress bar, cache, sha256 stored then enforced."""
    from edgedet.model import automl_fetch

    monkeypatch.setenv("EDGEDET_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    folder, _ = lite0_ckpt
    archive = tmp_path / "served" / "efficientdet-lite0.tgz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="efficientdet-lite0")
    monkeypatch.setitem(automl_fetch.OFFICIAL, "efficientdet-lite0", archive.as_uri())
    prefix, hint = automl_fetch.resolve("automl:efficientdet-lite0")
    cached = tmp_path / "cache" / "automl" / "efficientdet-lite0.tgz"
    assert cached.read_bytes() == archive.read_bytes() and hint == "efficientdet-lite0.tgz"
    stored = cached.with_name(cached.name + ".sha256").read_text().split()[0]
    assert stored == automl_fetch.sha256_file(archive)
    assert "MiB" in capsys.readouterr().err
    cached.write_bytes(cached.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ModelFileError, match="differs from the expected"):
        automl_fetch.resolve("automl:efficientdet-lite0")


def test_offline_download_names_the_address(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    from edgedet.model.automl_fetch import OFFICIAL, resolve

    monkeypatch.setenv("EDGEDET_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(ModelFileError) as exc:
        resolve("automl:efficientdet-lite0")
    msg = str(exc.value)
    assert OFFICIAL["efficientdet-lite0"] in msg and "by hand" in msg and "\n" not in msg
    assert OFFICIAL["efficientdet-d7"].endswith("coco2/efficientdet-d7.tar.gz")
    assert not list((tmp_path / "cache").rglob("*.part*"))


def test_bad_init_and_not_a_checkpoint(tmp_path):
    from edgedet.model.automl_import import open_init

    with pytest.raises(ConfigError, match="automl:PATH"):
        open_init("tf-hub:something")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileError, match="no TensorFlow checkpoint"):
        open_init(f"automl:{tmp_path / 'empty'}")
    from edgedet.model.automl_fetch import resolve

    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "model.index").write_bytes(b"")
    with pytest.raises(ModelFileError, match=r"model.index: a file of a checkpoint; give its folder .*or its prefix .*ck/model\)"):
        resolve(str(tmp_path / "ck" / "model.index"))


def test_pipeline_init_trains_from_the_checkpoint_variant(lite0_ckpt, tmp_path):
    from edgedet.cli import build_parser
    from edgedet.pipeline import plan

    folder, _ = lite0_ckpt
    args = build_parser().parse_args(["pipeline", "--model", "d0", "--init", f"automl:{folder}",
                                      "--targets", "tflite-fp32", "--out", str(tmp_path / "p")])
    stages = {s.name: s for s in plan(args)}
    train_cmd = [str(a) for a in stages["train"].commands[0]]
    assert train_cmd[train_cmd.index("--init") + 1] == f"automl:{folder.resolve()}"
    assert "--backbone-weights" not in train_cmd and train_cmd[train_cmd.index("--model") + 1] == "lite0"
    assert stages["convert"].outputs[0].endswith("lite0_tflite-fp32.tflite")


def test_missing_or_cut_data_shard_and_several_checkpoints_are_one_line_errors(lite0_ckpt, tmp_path, capsys):
    import shutil

    folder, _ = lite0_ckpt
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in ("checkpoint", "model.index"):
        shutil.copy(folder / f, broken / f)
    data = (folder / "model.data-00000-of-00001").read_bytes()
    for shard in (None, data[: len(data) // 3]):  # an interrupted extraction, a partial download
        if shard is not None:
            (broken / "model.data-00000-of-00001").write_bytes(shard)
        assert main(["import", "automl", str(broken), "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("edgedet: error:") and "checkpoint data missing or truncated" in err and "\n" not in err
        assert not (tmp_path / "run").exists()
    both = tmp_path / "both"
    shutil.copytree(folder, both / "efficientdet-lite0")
    shutil.copytree(folder, both / "efficientdet-d0")
    assert main(["import", "automl", str(both), "--out", str(tmp_path / "run")]) == 2
    assert "holds 2 checkpoints (efficientdet-d0, efficientdet-lite0)" in capsys.readouterr().err
