"""Accuracy-aware int8: the denylist requantizer, the minimal-set search, and the --max-drop refusals."""
from __future__ import annotations

import numpy as np
import pytest

from edgedet.errors import ConfigError


def _fragile_model():
    """A 16 px conv net whose middle conv ``fragile`` int8 destroys and float keeps intact.

    ``a``'s channel 0 is dead (zero kernel and bias, ReLU: exactly 0), and ``fragile`` reads it
    with weight 1000: float ignores it (1000 * 0), but each output channel's per-channel int8
    weight scale becomes 1000/127, so every real weight (|w| < 1) rounds to zero.
    """
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    x = inp = keras.Input((16, 16, 3), batch_size=1)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="a")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="fragile")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c")(x)
    out = keras.layers.Conv2D(4, 1, name="out")(x)
    model = keras.Model(inp, [out])
    k, b = model.get_layer("a").get_weights()
    k[..., 0], b[0] = 0.0, 0.0
    model.get_layer("a").set_weights([k, b])
    k, b = model.get_layer("fragile").get_weights()
    k[:, :, 0, :] = 1000.0
    model.get_layer("fragile").set_weights([k, b])
    return model


def _arrays(n: int, seed: int):
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 1, (1, 16, 16, 3)).astype(np.float32) for _ in range(n)]


def test_search_finds_the_one_fragile_layer():
    from edgedet.convert.tflite_converter import float_ops, interpreter, keras_to_tflite
    from edgedet.quantize.budget import calibrate, mixed_int8, quantize
    from edgedet.quantize.diagnose import short_name

    model = _fragile_model()
    cal, held = _arrays(16, 0), _arrays(4, 1)
    want = np.concatenate([model(x).numpy().ravel() for x in held])

    def fidelity(data: bytes) -> float:  # the "AP" of this test: 100 x cosine to the float outputs
        it = interpreter(data)
        got = []
        for x in held:
            it.set_tensor(it.get_input_details()[0]["index"], x)
            it.invoke()
            got.append(it.get_tensor(it.get_output_details()[0]["index"]).ravel())
        got = np.concatenate(got)
        return 100.0 * float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want) + 1e-12))

    calibrated, names = calibrate(model, cal)
    plain = quantize(calibrated, names, (), "uint8")
    assert _same_graph(plain, keras_to_tflite(model, "int8", cal))  # the denylist route ships the same int8 file
    assert fidelity(quantize(calibrated, names, (), "float32")) < 90  # int8 destroys it
    data, budget = mixed_int8(model, cal, fidelity, 100.0, 1.0, io_dtype="float32", debug_images=8, log=lambda m: None)
    assert budget["met"] and budget["float_layers"] == ["fragile"], budget
    assert [short_name(t) for t in budget["float_tensors"]] == ["fragile"]
    assert budget["int8_AP"] < 90 and budget["drop"] <= 1.0 and budget["log"][0]["step"] == "int8"
    assert {f["op"] for f in float_ops(data)} >= {"CONV_2D"}  # the fragile conv runs in float
    assert fidelity(data) == pytest.approx(budget["AP"])


def _same_graph(a: bytes, b: bytes) -> bool:
    """Same ops, tensors and weights (the converter's metadata buffers hold a per-call hash)."""
    from tensorflow.lite.tools import flatbuffer_utils as fbu

    ma, mb = (fbu.convert_bytearray_to_object(bytearray(x)) for x in (a, b))
    meta_a, meta_b = {m.buffer for m in ma.metadata or []}, {m.buffer for m in mb.metadata or []}
    bufs_a = [bytes(x.data) if x.data is not None else b"" for i, x in enumerate(ma.buffers) if i not in meta_a]
    bufs_b = [bytes(x.data) if x.data is not None else b"" for i, x in enumerate(mb.buffers) if i not in meta_b]
    ops = [[(o.opcodeIndex, list(o.inputs), list(o.outputs)) for o in m.subgraphs[0].operators] for m in (ma, mb)]
    return bufs_a == bufs_b and ops[0] == ops[1]


def test_search_bisects_then_prunes():
    from edgedet.quantize.budget import search

    harm = {"a": 3.0, "b": 0.05, "c": 2.0, "d": 0.0, "e": 0.0}  # drop each one's int8 costs
    seen = []

    def score(deny):
        seen.append(sorted(deny))
        return 50.0 - sum(v for k, v in harm.items() if k not in deny)

    found = search(score, ["a", "b", "c", "d", "e"], 50.0, 0.1, log=lambda m: None)
    assert found["met"] and sorted(found["float_layers"]) == ["a", "c"] and found["drop"] == pytest.approx(0.05)
    assert found["evaluations"] == len({tuple(s) for s in seen}) and found["log"][0]["step"] == "int8"
    none = search(score, ["a", "b"], 50.0, 10.0, log=lambda m: None)
    assert none["float_layers"] == [] and none["evaluations"] == 1
    miss = search(score, ["a"], 50.0, 0.1, log=lambda m: None)
    assert not miss["met"] and miss["float_layers"] == ["a"]


def test_search_finds_a_needed_tensor_ranked_deep():
    """The tensor that carries the loss ranked deep in the list: bisection keeps a long prefix and
    pruning must not pay one evaluation per tensor of it."""
    from edgedet.quantize.budget import search

    ranked = [f"t{i}" for i in range(600)]
    harm = {"t3": 0.3, "t554": 0.25}  # everything else costs nothing in int8

    def score(deny):
        return 50.0 - sum(v for k, v in harm.items() if k not in deny)

    found = search(score, ranked, 50.0, 0.2, log=lambda m: None)
    assert found["met"] and sorted(found["float_layers"]) == ["t3", "t554"]
    assert found["evaluations"] <= 30  # one tensor at a time would take 2 + 10 + 553
    # 1-minimal: taking either back to int8 breaks the budget
    assert all(50.0 - score([x for x in found["float_layers"] if x != t]) > 0.2 for t in found["float_layers"])
    assert found["minimal"]

    # Out of evaluations mid-pruning: a set measured within budget, flagged as not minimal
    capped = search(score, ranked, 50.0, 0.2, log=lambda m: None, max_evaluations=15)
    assert capped["met"] and not capped["minimal"] and capped["evaluations"] == 15
    assert {"t3", "t554"} <= set(capped["float_layers"]) and len(capped["float_layers"]) > 2


@pytest.mark.parametrize("argv, match", [
    (["--target", "edgetpu", "--target", "tflite-int8"], "--target edgetpu cannot run"),
    (["--device", "coral-usb"], "--device coral-usb cannot run"),
    (["--device", "android-nnapi"], "--device android-nnapi cannot run"),
])
def test_integer_only_targets_refuse_max_drop(tmp_path, capsys, argv, match):
    from edgedet.cli import main

    rc = main(["convert", "--weights", str(tmp_path), *argv, "--max-drop", "0.5", "--val-data", str(tmp_path),
               "--calib-data", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc != 0 and match in err and "quantize qat" in err and "Traceback" not in err
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 1


def test_max_drop_option_errors(tmp_path):
    from edgedet.convert.api import check_budget
    from edgedet.convert.registry import resolve_targets

    ts = resolve_targets(["tflite-int8"])
    with pytest.raises(ConfigError, match="needs --val-data"):
        check_budget(ts, str(tmp_path), 0.5, None, False)
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match=">= 0"):
            check_budget(ts, str(tmp_path), bad, "x", False)
    with pytest.raises(ConfigError, match="applies to --target tflite-int8 and openvino-int8"):
        check_budget(resolve_targets(["onnx-int8"]), str(tmp_path), 0.5, "x", False)


@pytest.mark.slow
def test_validate_reports_the_float_twin_of_a_qat_file(float_run, synth, qhelpers, tmp_path):
    import json

    from edgedet.convert.api import convert
    from edgedet.quantize.qat_graph import quantize_model
    from edgedet.runtime.report.validate import validate
    from edgedet.train.synth import CLASSES

    model, cfg = qhelpers.build_realistic("test", synth)
    qat_run = qhelpers.make_run(tmp_path / "qat", quantize_model(model), cfg, CLASSES, synth, kind="qat")
    data = json.loads((qat_run / "run.json").read_text())
    (qat_run / "run.json").write_text(json.dumps(dict(data, source_run=str(float_run))))
    arts, _ = convert(["tflite-int8"], weights=str(qat_run), out_dir=str(tmp_path / "export"), log=lambda m: None)
    # An --nms file suppresses across classes, where the twin suppresses per class: that
    # difference is not quantization, so it gets no vs_twin, and the report says why.
    nms_arts, _ = convert(["tflite-int8"], weights=str(qat_run), nms=True, out_dir=str(tmp_path / "nms"),
                          log=lambda m: None)
    report = validate([arts[0].path, nms_arts[0].path], str(synth), str(tmp_path / "report"), limit=1, html=False,
                      progress=False, log=lambda m: None)  # no float baseline: one worker less; the twin needs none
    roles = [m["role"] for m in report["models"]]
    assert roles == ["twin", "candidate", "candidate"], roles
    twin, qat, nms = report["models"]
    assert nms["nms"]["per_class"] is False and "vs_twin" not in nms and qat["nms"] is None
    assert nms["name"] + " (in-graph NMS across classes)" in (tmp_path / "report" / "report.md").read_text()
    assert twin["name"] == "float twin (qat)" and twin["status"] == "pass" and twin["quantization"]["method"] == "none"
    assert qat["vs_twin"]["twin"] == twin["name"]
    assert qat["vs_twin"]["delta"]["AP"] == pytest.approx(qat["metrics"]["AP"] - twin["metrics"]["AP"])
    assert "vs its float twin" in (tmp_path / "report" / "report.md").read_text()


def test_guard_decides_by_validation_ap():
    from edgedet.quantize.guard import decide

    assert decide(34.12, 43.48) == ("ptq", "QAT AP 34.12 < PTQ 43.48 on the validation split (QAT lost 9.36 points)")
    assert decide(43.5, 43.5)[0] == "qat" and decide(44.0, 43.5)[0] == "qat"
    assert decide(None, 40.0)[0] == "ptq" and decide(40.0, None)[0] == "qat"
    with pytest.raises(ConfigError):
        decide(None, None)
    # tiny APs keep the digits that tell them apart: never "0.01 < 0.01"
    assert decide(0.0077, 0.0136)[1] == "QAT AP 0.008 < PTQ 0.014 on the validation split (QAT lost 0.006 points)"
    assert decide(44.0, 43.5, "test")[1] == "QAT AP 44.00 >= PTQ 43.50 on the test split"


def test_choose_refuses_names_in_neither_folder_before_copying(tmp_path):
    from edgedet.quantize.guard import choose

    (tmp_path / "q").mkdir()
    (tmp_path / "p").mkdir()
    (tmp_path / "q" / "a.tflite").write_bytes(b"x")
    with pytest.raises(ConfigError, match="--names missing.tflite: in neither"):
        choose(str(tmp_path / "q"), str(tmp_path / "p"), ["a.tflite", "missing.tflite"], "d", str(tmp_path / "out"))
    with pytest.raises(ConfigError, match="--names: give"):
        choose(str(tmp_path / "q"), str(tmp_path / "p"), ["", ""], "d", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_guard_ships_a_file_and_says_why(float_run, synth, tmp_path):
    import json
    import shutil

    from edgedet.convert.api import convert
    from edgedet.quantize.guard import choose

    from edgedet.runtime.metadata import embed_tflite, read_metadata

    arts, _ = convert(["tflite-fp32"], weights=str(float_run), out_dir=str(tmp_path / "ptq"), log=lambda m: None)
    name = arts[0].path.rsplit("/", 1)[-1]
    (tmp_path / "qat").mkdir()
    shutil.copyfile(arts[0].path, tmp_path / "qat" / name)
    # the same weights labelled as each folder's kind: a tie, by construction
    for kind in ("qat", "ptq"):
        meta = read_metadata(str(tmp_path / kind / name))
        meta.quantization = {"method": kind}
        embed_tflite(str(tmp_path / kind / name), meta)
    # swapped folders are refused before anything is evaluated or copied
    with pytest.raises(ConfigError, match=r"--qat .*: its metadata says quantization 'ptq', not qat \(are --qat and --ptq swapped"):
        choose(str(tmp_path / "ptq"), str(tmp_path / "qat"), [name], str(synth), str(tmp_path / "int8"), log=lambda m: None)
    assert not (tmp_path / "int8").exists()
    got = choose(str(tmp_path / "qat"), str(tmp_path / "ptq"), [name], str(synth), str(tmp_path / "int8"),
                 log=lambda m: None)
    saved = json.loads((tmp_path / "int8" / "choice.json").read_text())
    row = saved["targets"][name]
    assert saved == got and row["shipped"] == "qat" and row["AP"]["qat"] == row["AP"]["ptq"]  # same file: tie -> QAT
    assert "validation split" in row["why"] and saved["split"] == "val" and saved["images"] == 2
    assert (tmp_path / "int8" / name).read_bytes() == (tmp_path / "qat" / name).read_bytes()


def test_search_ends_1_minimal_where_ap_is_not_monotone():
    """{b} alone meets the budget, but with o also in float it misses (AP is not monotone in the
    float set): bisection then keeps [b, f]. The last pass takes f back and the set is {b}."""
    from edgedet.quantize.budget import search

    def score(deny):
        deny = set(deny)
        return 49.95 if ("b" in deny and "o" not in deny) or deny == {"o", "b", "f"} else 40.0

    found = search(score, ["o", "b", "f"], 50.0, 0.1, log=lambda m: None)
    assert found["met"] and found["minimal"] and found["float_layers"] == ["b"], found
    assert any(step["step"] == "minimal" for step in found["log"])
