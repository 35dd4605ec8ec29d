"""`edgedet validate` end to end on tiny real models (LiteRT), real pycocotools, real subprocesses.

Fixture: the `test` model with its batch-norm statistics re-estimated on a few images (a freshly
initialised EfficientDet's activations shrink to ~1e-7 by the heads, which makes every output
constant) and its predictors scaled up, so detections vary from image to image. Exported fp32,
and int8 calibrated on blank images (the deliberately broken model). Ground truth is the fp32
model's own confident detections, so the float baseline scores AP ~1 by construction and every
drop is the export's doing.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pycocotools")

LABELS = ["red", "white", "platelet"]
SIZE = 128
N_IMAGES = 10
GT_PER_IMAGE = 5


def _image(seed: int, h: int = 240, w: int = 320) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx / w * 200, yy / h * 200, (xx + yy) / (w + h) * 255], axis=-1)
    for _ in range(8):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(10, 50)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 255, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def _build_models(root: Path) -> dict[str, str]:
    import tf_keras as keras

    from edgedet.model import build_model, count_macs, get_config
    from edgedet.convert.tflite_converter import keras_to_tflite, output_names
    from edgedet.runtime.metadata import ModelMeta, embed_tflite
    from edgedet.runtime.preprocess import letterbox, normalize

    cfg = get_config("test", num_classes=len(LABELS), image_size=SIZE)
    model = build_model(cfg)
    xs = np.concatenate([normalize(letterbox(_image(s), (SIZE, SIZE), cfg.mean)[0], cfg.mean, cfg.std)[None]
                         for s in range(8)])
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in bns:  # one training-mode pass with momentum 0 sets moving stats = batch stats
        layer.momentum = 0.0
    model(xs, training=True)
    for layer in bns:
        layer.momentum = 0.99
    k, _ = model.get_layer("class_net_predict_pw").get_weights()
    model.get_layer("class_net_predict_pw").set_weights([k * 4.0, np.full(k.shape[-1], -2.0, np.float32)])
    k, b = model.get_layer("box_net_predict_pw").get_weights()
    model.get_layer("box_net_predict_pw").set_weights([k * 2.0, b])

    macs = int(count_macs(model))

    def meta(target, method):
        return ModelMeta(labels=LABELS, input_size=(SIZE, SIZE), mean=tuple(cfg.mean), std=tuple(cfg.std),
                         anchors=cfg.anchor_config.to_dict(), output_names=output_names(model), model="test",
                         target=target, quantization={"method": method}, macs=macs)

    paths = {}
    for name, mode, rep, target, method in (
        ("fp32", "fp32", None, "tflite-fp32", "none"),
        ("blank-int8", "int8", [np.zeros((1, SIZE, SIZE, 3), np.float32)] * 2, "tflite-int8", "ptq"),
    ):
        p = root / f"test_{name}.tflite"
        p.write_bytes(keras_to_tflite(model, mode, representative=rep))
        embed_tflite(str(p), meta(target, method))
        paths[name] = str(p)
    # The same weights as a training run folder (the run.json contract of edgedet.runs).
    from edgedet.files import atomic_write_json
    from edgedet.runs import save_weights

    run = root / "run"
    run.mkdir()
    save_weights(model, run / "best.weights.h5")
    atomic_write_json(run / "run.json", {"model_config": cfg.to_dict(), "class_names": LABELS, "kind": "float",
                                         "weights": {"best": "best.weights.h5"}})
    paths["run"] = str(run)
    return paths


def _build_dataset(root: Path, fp32: str, jitter: float = 0.0) -> Path:
    """COCO layout (annotations/instances_test.json + test/*.png) labelled by the fp32 model.

    ``jitter``: shift every ground-truth corner by up to this many pixels (AP well below 1).
    """
    from PIL import Image

    from edgedet.runtime.detector import Detector
    from edgedet.runtime.boxes import iou_matrix
    from edgedet.runtime.report.evaluate import EVAL_POSTPROCESS
    from edgedet.train.check import DUPLICATE_IOU

    det = Detector.from_file(fp32, **EVAL_POSTPROCESS)
    (root / "test").mkdir(parents=True)
    (root / "annotations").mkdir()
    imgs = [_image(100 + i) for i in range(N_IMAGES)]
    dets = [det.detect(img) for img in imgs]
    # Ground truth = every detection above one global score, so all false positives rank below
    # all true ones across the whole split (COCO ranks detections split-wide, not per image).
    thr = np.sort(np.concatenate([d.scores for d in dets]))[::-1][N_IMAGES * GT_PER_IMAGE]
    images, anns = [], []
    rng = np.random.default_rng(7)
    for i, (img, d) in enumerate(zip(imgs, dets)):
        Image.fromarray(img).save(root / "test" / f"{i:03d}.png")
        images.append({"id": i + 1, "file_name": f"{i:03d}.png", "width": img.shape[1], "height": img.shape[0]})
        chosen = []
        for b, c in zip(d.boxes[d.scores > thr], d.classes[d.scores > thr]):
            # Boxes clipped at the image border can coincide; the dataset checker drops such
            # duplicates, so they are left out here (each stays a confident false positive).
            if any(c == qc and iou_matrix(b[None], q[None])[0, 0] > DUPLICATE_IOU for q, qc in chosen):
                continue
            chosen.append((b, c))
            b = np.clip(b + rng.uniform(-jitter, jitter, 4), 0, [img.shape[1], img.shape[0]] * 2)
            x0, y0, x1, y1 = (float(v) for v in b)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(c) + 1, "iscrowd": 0,
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0)})
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(LABELS)]
    (root / "annotations" / "instances_test.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root


def _diagnosis(**extra) -> dict:
    """A diagnosis.json in `edgedet quantize diagnose`'s format (version 1), trimmed."""
    row = {"tensor": "class_net/conv_p3", "op": "CONV_2D", "rmse_over_scale": 4.2, "rmse": 0.8, "scale": 0.19,
           "max_abs_error": 3.0, "mean_error": 0.1, "num_elements": 6912, "rank": 1}
    row2 = dict(row, tensor="box_net/conv_p3", rmse_over_scale=0.3, rank=2)
    d = {"kind": "edgedet-quant-diagnosis", "version": 1, "run": "/runs/x", "run_kind": "float", "target": "tflite",
         "healthy_rmse_over_scale": 0.289, "float_AP": 0.5, "int8_AP": 0.1, "selective_AP": 0.45,
         "calibration": {"images": 300, "seed": 0, "sha256": "abc"}, "layers": [row, row2],
         "all_layers": [row, row2], "outputs": {"class_p3": 0.7}}
    d.update(extra)
    return d


def test_find_and_load_diagnosis(tmp_path):
    from edgedet.runtime.report.layers import find_diagnosis, load_diagnosis

    model = tmp_path / "export" / "m_tflite-int8.tflite"
    model.parent.mkdir()
    model.write_bytes(b"")
    int8 = {"quantization": {"method": "ptq"}, "target": "tflite-int8"}
    assert find_diagnosis(str(model), int8) is None
    run_diag = tmp_path / "run" / "diagnosis" / "diagnosis.json"  # where `quantize diagnose RUN` writes it
    run_diag.parent.mkdir(parents=True)
    run_diag.write_text(json.dumps(_diagnosis()))
    int8["extra"] = {"source": {"run": str(tmp_path / "run")}}
    assert find_diagnosis(str(model), int8) == str(run_diag)
    assert find_diagnosis(str(model), {"quantization": {"method": "fp16"}, "extra": int8["extra"]}) is None
    (model.parent / "diagnosis.json").write_text("{}")  # next to the model wins
    assert find_diagnosis(str(model), int8) == str(model.parent / "diagnosis.json")
    assert find_diagnosis(str(model), {}, {"m_tflite-int8.tflite": "x.json"}) == "x.json"

    table, why = load_diagnosis(str(run_diag), calib_sha256="abc")
    assert why is None and [r["tensor"] for r in table["rows"]] == ["class_net/conv_p3", "box_net/conv_p3"]
    table, why = load_diagnosis(str(run_diag), calib_sha256="other")
    assert table is None and "another calibration set" in why
    qat = tmp_path / "qat.json"  # a QAT run's diagnosis has output cosines only
    qat.write_text(json.dumps(_diagnosis(layers=[], all_layers=[], outputs={"class_p3": 0.99, "box_p3": 0.9})))
    table, _ = load_diagnosis(str(qat))
    assert table["rows"][0] == {"output": "box_p3", "cosine": 0.9}


def test_compare_outputs_known_values():
    from edgedet.runtime.report.layers import compare_outputs, output_table

    a = np.array([[[1.0], [-1.0]], [[1.0], [-1.0]]], np.float32)  # std 1
    base = {"out_0_class_p3": a, "out_0_box_p3": a}
    other = {"out_0_class_p3": a + 0.5, "out_0_box_p3": -a}
    rows = compare_outputs(base, other)
    assert [r["output"] for r in rows] == ["box_p3", "class_p3"]  # worst first
    assert rows[0]["rel_rmse"] == pytest.approx(2.0) and rows[0]["cosine"] == pytest.approx(-1.0)
    assert rows[1]["rel_rmse"] == pytest.approx(0.5) and rows[1]["max_abs"] == pytest.approx(0.5)
    assert output_table(base, {}, 1) is None


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    pytest.importorskip("tensorflow")
    root = tmp_path_factory.mktemp("validate")
    paths = _build_models(root)
    data = _build_dataset(root / "data", paths["fp32"])
    jittered = _build_dataset(root / "data_jitter", paths["fp32"], jitter=6.0)
    good = root / "good.tflite"  # a second artifact that must pass: the fp32 file under another name
    shutil.copy(paths["fp32"], good)
    truncated = root / "truncated.tflite"
    truncated.write_bytes(Path(paths["fp32"]).read_bytes()[:5000])
    return {"root": root, "data": str(data), "fp32": paths["fp32"], "good": str(good), "run": paths["run"],
            "data_jitter": str(jittered),
            "blank": paths["blank-int8"], "truncated": str(truncated)}


@pytest.mark.slow
def test_broken_model_is_flagged_with_per_class_and_per_layer_damage(setup, tmp_path):
    from edgedet.cli import main
    from edgedet.runtime.report.schema import check_schema

    out = tmp_path / "report"
    rc = main(["validate", "--baseline", setup["fp32"], "--models", setup["good"], setup["blank"],
               setup["truncated"], "--data", setup["data"], "--out", str(out), "--max-ap-drop", "0.05"])
    assert rc == 1  # CI gating: a missed threshold (and a failed model) exits non-zero
    report = json.loads((out / "report.json").read_text())
    assert check_schema(report) == []
    assert {p.name for p in out.iterdir()} == {"report.json", "report.md", "report.html"}
    by = {m["name"]: m for m in report["models"]}
    base = by["test_fp32.tflite"]
    assert base["role"] == "baseline" and base["metrics"]["AP"] > 0.9
    assert base["provenance"]["backend"] == "litert" and base["provenance"]["backend_version"]
    assert base["file_size_bytes"] == os.path.getsize(setup["fp32"])
    lat = base["latency"]
    assert lat["init_ms"] > 0 and lat["first_run_ms"] > 0 and lat["end_to_end"]["n"] == N_IMAGES - 1
    assert lat["end_to_end"]["p50"] >= lat["invoke"]["p50"] > 0
    assert base["macs"] > 1e6
    assert base["gmacs_per_s"] == pytest.approx(base["macs"] / 1e9 / (lat["invoke"]["p50"] / 1e3), rel=1e-6)

    good = by["good.tflite"]
    assert good["status"] == "pass" and good["delta"]["AP"] == pytest.approx(0.0, abs=1e-9)
    # the candidates that ran were re-timed interleaved for the ranking; the failed one was not
    assert good["rank_ms"] > 0 and by["test_blank-int8.tflite"]["rank_ms"] > 0 and "rank_ms" not in by["truncated.tflite"]
    assert all(r["rel_rmse"] == pytest.approx(0.0, abs=1e-6) for r in good["layer_errors"]["rows"])

    bad = by["test_blank-int8.tflite"]
    assert bad["status"] == "miss" and bad["status_icon"] == "❎"
    assert bad["delta"]["AP"] < -0.05 and "AP dropped" in bad["reasons"][0]
    # per class: every class with ground truth lost AP; the reason names the worst ones
    drops = {n: pc["delta_ap"] for n, pc in bad["per_class"].items() if pc["delta_ap"] is not None}
    assert drops and all(d < 0 for d in drops.values())
    worst = min(drops, key=drops.get)
    assert worst in bad["reasons"][0]
    # per layer: every tensor against the fp32 TFLite file; the ranges are wrong from the very first
    # convolution on (calibrated on blank images), and the note says where the damage starts
    table = bad["layer_errors"]
    assert table["kind"] == "tensors" and len(table["rows"]) > 100
    assert table["rows"][0]["rmse_over_scale"] > 10 * 0.29
    assert "First tensor beyond 2: #0 stem" in table["note"]
    # the fp32 copy gets the per-output comparison against the float baseline: zero error
    assert good["layer_errors"]["kind"] == "outputs" and len(good["layer_errors"]["rows"]) == 10

    trunc = by["truncated.tflite"]
    assert trunc["status"] == "fail" and "truncated.tflite" in trunc["error"]
    assert report["summary"] == {"passed": 2, "missed": 1, "failed": 1, "exit_code": 1}

    md = (out / "report.md").read_text()
    assert "| ❎ | test_blank-int8.tflite | tflite-int8 |" in md
    assert "## Per-tensor int8 error vs fp32 TFLite: test_blank-int8.tflite" in md
    html = (out / "report.html").read_text()
    assert html.count("<img class='plot'") == 4


@pytest.mark.slow
def test_crash_mid_run_is_reported_and_the_others_are_written(setup, tmp_path, monkeypatch):
    from edgedet.runtime.report.validate import validate

    # Test hook: the worker running good.tflite aborts (a real SIGABRT) on its 4th image.
    monkeypatch.setenv("EDGEDET_VALIDATE_FAULT", "good.tflite:3")
    diag = tmp_path / "diag.json"
    diag.write_text(json.dumps(_diagnosis()))
    report = validate([setup["good"], setup["blank"]], setup["data"], str(tmp_path / "r"), baseline=setup["fp32"],
                      diagnosis=[str(diag)], progress=False, log=lambda m: None)
    by = {m["name"]: m for m in report["models"]}
    crashed = by["good.tflite"]
    assert crashed["status"] == "fail" and "SIGABRT" in crashed["error"]
    assert by["test_fp32.tflite"]["status"] == "pass"
    assert by["test_blank-int8.tflite"]["metrics"] is not None  # results of the others survive
    table = by["test_blank-int8.tflite"]["layer_errors"]  # the diagnosis is embedded for the int8 model
    assert table["kind"] == "diagnosis" and table["rows"][0]["tensor"] == "class_net/conv_p3"
    assert table["columns"][:4] == ["rank", "tensor", "op", "rmse_over_scale"]
    assert table["note"].startswith("float_AP=0.5; int8_AP=0.1")
    written = json.loads((tmp_path / "r" / "report.json").read_text())
    assert written["summary"]["failed"] == 1 and "class_net/conv_p3" in (tmp_path / "r" / "report.md").read_text()


def test_thresholds_from_profile_and_overrides():
    from edgedet.errors import ConfigError
    from edgedet.runtime.report.validate import resolve_thresholds

    prof, th = resolve_thresholds("x86-cpu")
    assert th["device"] == "x86-cpu" and th["max_ap_drop"] == prof.max_map_drop
    assert th["latency_budget_ms"] == prof.latency_ms and th["latency_metric"] == "end_to_end.p50"
    _, th = resolve_thresholds("x86-cpu", max_ap_drop=0.005, latency_budget_ms=3.0, latency_metric="invoke.p90")
    assert (th["max_ap_drop"], th["latency_budget_ms"], th["latency_metric"]) == (0.005, 3.0, "invoke.p90")
    with pytest.raises(ConfigError, match="--max-ap-drop"):
        resolve_thresholds(None, max_ap_drop=2.0)
    with pytest.raises(ConfigError, match="unknown device profile"):
        resolve_thresholds("x86-cpuu")


@pytest.mark.slow
def test_run_baseline_ap_equals_edgedet_eval_exactly(setup, tmp_path):
    from edgedet.runtime.report.validate import validate
    from edgedet.train.evaluate_keras import run_eval

    # Jittered ground truth so the AP compared is an unremarkable number, not a saturated 1.0.
    report = validate([setup["fp32"]], setup["data_jitter"], str(tmp_path / "r"), baseline=setup["run"],
                      progress=False, log=lambda m: None)
    base = report["models"][0]
    assert base["name"] == "float (run)" and base["format"] == "keras" and base["status"] == "pass"
    assert base["provenance"]["backend"] == "keras" and base["macs"] > 0
    assert base["latency"]["invoke"]["n"] == N_IMAGES - 1
    ref = run_eval(setup["run"], data=setup["data_jitter"])
    assert 0.1 < ref["AP"] < 0.9
    assert base["metrics"]["AP"] == ref["AP"]  # exactly: the same predict, the same evaluator
    assert all(base["per_class"][n]["ap"] == ref["per_class"][n] for n in LABELS)
    # the exported fp32 file of the same weights lands within float noise of the Keras model
    tfl = report["models"][1]
    assert abs(tfl["delta"]["AP"]) < 0.01
    assert tfl["layer_errors"]["rows"][0]["rel_rmse"] < 1e-3


def test_row_names_disambiguate_colliding_file_names():
    from edgedet.runtime.report.validate import row_names

    got = row_names(["r/4_convert/float/lite0_tflite-int8.tflite", "r/4_convert/qat/lite0_tflite-int8.tflite",
                  "r/4_convert/float/lite0_onnx.onnx", "a/x.tflite", "a/x.tflite"])
    assert got == ["float/lite0_tflite-int8.tflite", "qat/lite0_tflite-int8.tflite", "lite0_onnx.onnx",
                   "a/x.tflite", "a/x.tflite #2"]


def test_the_float_twin_is_left_out_with_a_note_where_tensorflow_is_missing(rt_models, tmp_path, monkeypatch):
    """A device install (no TensorFlow) that can see the QAT run folder: no twin row it cannot run."""
    import sys

    from edgedet.runtime.metadata import embed_tflite, read_metadata
    from edgedet.runtime.report.twins import qat_twins

    run = tmp_path / "qat"
    run.mkdir()
    (run / "run.json").write_text("{}")
    model = tmp_path / "int8.tflite"
    shutil.copyfile(rt_models.tflite("fp32"), model)
    meta = read_metadata(str(model))
    meta.extra["source"] = {"kind": "qat", "run": str(run)}
    embed_tflite(str(model), meta)
    assert qat_twins([str(model)], log=lambda m: None) == [str(run)]
    notes = []
    monkeypatch.setitem(sys.modules, "tf_keras", None)  # what a runtime-only install looks like to find_spec
    assert qat_twins([str(model)], log=notes.append) == []
    assert len(notes) == 1 and str(run) in notes[0] and "edgedet[train]" in notes[0]


def test_every_file_is_checked_before_the_first_model_runs(tmp_path, monkeypatch):
    import sys

    from edgedet.errors import ConfigError, ToolchainError
    from edgedet.runtime.report.validate import check_runnable

    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(ConfigError, match=r"--baseline .*data: not a model"):
        check_runnable([], str(data))
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # a device install without it
    with pytest.raises(ToolchainError, match=r"--models .*m.onnx: running it needs onnxruntime"):
        check_runnable([str(onnx)], None)
