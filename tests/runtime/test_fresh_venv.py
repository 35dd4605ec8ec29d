"""A fresh venv with only `pip install "<repo>[runtime]"` (no TensorFlow) runs `edgedet detect` on
an exported Lite0 int8 .tflite and a BCCD image; `edgedet validate` there stops with one line naming
the `device` extra; with `<repo>[device]` added (still no TensorFlow) it validates the int8 file
against the fp32 .tflite on a tiny COCO set and writes report.md, report.json and report.html.

Uses the package registry (pip) to build the venv; the models are exported here with the
project's convert registry (TensorFlow lives only in the test process, never in the venv).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.shared]

REPO = Path(__file__).resolve().parents[2]


def _export_lite0(out: Path, bccd: Path) -> tuple[str, str]:
    """``(fp32 path, int8 path)`` of an untrained Lite0 at 320 px with BCCD's labels."""
    pytest.importorskip("tensorflow")
    from edgedet.convert.api import Context, run_targets
    from edgedet.convert.registry import resolve_targets
    from edgedet.convert.source import Source
    from edgedet.model import build_model, get_config
    from edgedet.model.efficientdet import OUTPUT_NAMES
    from edgedet.runtime.metadata import ModelMeta

    labels = ["RBC", "WBC", "Platelets"]
    cfg = get_config("lite0", num_classes=len(labels), image_size=320)
    model = build_model(cfg)
    meta = ModelMeta(labels=labels, input_size=(320, 320), mean=tuple(cfg.mean), std=tuple(cfg.std),
                     anchors=cfg.anchor_config.to_dict(), output_names=list(OUTPUT_NAMES), model="lite0")
    calib = out / "calib"
    calib.mkdir()
    for img in sorted((bccd / "JPEGImages").glob("*.jpg"))[:4]:
        os.symlink(img, calib / img.name)
    src = Source(kind="float", stem="lite0", meta=meta, path=str(out), _model=model)
    ctx = Context(source=src, calib_data=str(calib), calib_count=4, log=lambda m: None, work_dir=str(out))
    fp32, int8 = run_targets(ctx, resolve_targets(["tflite-fp32", "tflite-int8"]), str(out), "lite0")
    return fp32.path, int8.path


def _tiny_coco(out: Path, bccd: Path, n: int = 4) -> Path:
    """The first ``n`` BCCD test images with their boxes, as a COCO ``test.json`` beside ``images/``."""
    from edgedet.train.check import load_checked

    ds = load_checked(str(bccd), "skip")
    (out / "images").mkdir(parents=True)
    images, anns = [], []
    for i, smp in enumerate(list(ds.split("test"))[:n], 1):
        name = os.path.basename(smp.image_path)
        os.symlink(smp.image_path, out / "images" / name)
        images.append({"id": i, "file_name": name, "width": smp.width, "height": smp.height})
        for (x0, y0, x1, y1), c in zip(smp.boxes.tolist(), smp.classes.tolist()):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c) + 1, "iscrowd": 0,
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0)})
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(ds.class_names)]
    (out / "test.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return out / "test.json"


def _pip(py: Path, *args: str) -> None:
    pip = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
                         capture_output=True, text=True, timeout=900)
    if pip.returncode != 0 and any(s in pip.stderr for s in ("NewConnectionError", "Temporary failure in name resolution", "No matching distribution")):
        pytest.skip(f"package registry not reachable: {pip.stderr.strip().splitlines()[-1]}")
    assert pip.returncode == 0, pip.stderr[-2000:]


def _no_tensorflow(py: Path, env: dict, cwd: Path) -> bool:
    code = "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in ('tensorflow', 'tf_keras', 'keras')))"
    return subprocess.run([str(py), "-c", code], env=env, cwd=cwd).returncode == 0


def test_fresh_runtime_venv_detects_then_validates(tmp_path, bccd):
    fp32, model = _export_lite0(tmp_path, bccd)
    data = _tiny_coco(tmp_path / "coco", bccd)
    image = sorted((bccd / "JPEGImages").glob("*.jpg"))[0]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    _pip(py, f"{REPO}[runtime]")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    assert _no_tensorflow(py, env, tmp_path), "TensorFlow/Keras must not be installed by edgedet[runtime]"
    edgedet = venv / "bin" / "edgedet"
    r = subprocess.run([str(edgedet), "detect", "--model", model, str(image), "--score", "0.001", "--max-det", "5"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"{image}: 5 detections" in r.stdout, r.stdout
    assert "litert" in r.stdout and "3 classes" in r.stdout
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("  ") and "[" in ln]
    assert len(lines) == 5 and lines[0].split()[0] in ("RBC", "WBC", "Platelets")

    validate = [str(edgedet), "validate", "--baseline", fp32, "--models", model, "--data", str(data),
                "--out", str(tmp_path / "report")]
    r = subprocess.run(validate, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.strip().splitlines() == [
        "edgedet: error: edgedet validate needs the Python module 'pycocotools', which is not installed: "
        'pip install "edgedet[device]" (brings pycocotools)']

    _pip(py, f"{REPO}[device]")
    assert _no_tensorflow(py, env, tmp_path), "TensorFlow/Keras must not be installed by edgedet[device]"
    r = subprocess.run(validate, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stderr[-2000:]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert [m["status"] != "fail" for m in report["models"]] == [True, True], r.stdout
    assert report["dataset"]["num_images"] == 4 and report["dataset"]["fingerprint"]
    assert all(m["metrics"] is not None and m["sha256"] for m in report["models"])
    assert "## Summary" in (tmp_path / "report" / "report.md").read_text()
    assert "id='fig-latency_hist'" in (tmp_path / "report" / "report.html").read_text()
    shutil.copytree(tmp_path / "report", tmp_path / "report-copy")  # the same file twice is refused
    r = subprocess.run([str(edgedet), "report", "merge", str(tmp_path / "report"), str(tmp_path / "report-copy"),
                        "--names", "a", "b", "--out", str(tmp_path / "merged")],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and (tmp_path / "merged" / "report.html").is_file(), r.stderr
