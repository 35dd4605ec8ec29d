"""`edgedet pipeline --data DIR` on datasets as exported: a Roboflow YOLO export and a LabelImg folder.

Nothing about the dataset is passed beyond ``--data``: no format, no class list, no split.
The other options only keep the run small (the `test` model at 64 px, one epoch, one target).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "train"))  # --import-mode=importlib adds no test folder itself
import layout_files as lf  # noqa: E402

pytestmark = pytest.mark.slow

ENV = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")


def _export(layout: str, tmp_path: Path) -> Path:
    data = tmp_path / "export"
    data.mkdir()
    lf.LAYOUTS[layout][0](data)
    return data


def _pipeline(data: Path, out: Path) -> dict:
    """Run the whole pipeline on ``data`` (small model, one epoch, one target); returns check.json."""
    cmd = [sys.executable, "-m", "edgedet", "pipeline", "--data", str(data), "--out", str(out),
           "--model", "test", "--image-size", "64", "--epochs", "1", "--qat-epochs", "1", "--batch", "4",
           "--backbone-weights", "none", "--targets", "tflite-fp32"]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=1500)
    assert r.returncode in (0, 1), r.stdout[-3000:] + r.stderr[-3000:]
    assert (out / "1_data" / "stats.png").stat().st_size > 10_000
    rep = json.loads((out / "5_validate" / "report.json").read_text())
    fp32 = next(m for m in rep["models"] if m["target"] == "tflite-fp32")
    assert fp32["status"] in ("pass", "miss"), fp32.get("error")  # a 1-epoch model may miss a threshold
    # The validation report links the data stage's picture, relative to the report folder.
    assert rep["dataset"]["plot"] == os.path.join("..", "1_data", "stats.png")
    assert (out / "5_validate" / rep["dataset"]["plot"]).is_file()
    assert "](../1_data/stats.png)" in (out / "5_validate" / "report.md").read_text()
    assert "href='../1_data/stats.png'" in (out / "5_validate" / "report.html").read_text()
    return json.loads((out / "1_data" / "check.json").read_text())


def test_pipeline_on_roboflow_yolo_export(tmp_path):
    out = tmp_path / "run"
    check = _pipeline(_export("yolo-roboflow-yaml", tmp_path), out)
    assert check["classes"] == lf.CLASSES and check["ok"] and check["layout"] == "YOLO data YAML (data.yaml)"
    assert {k: v["images"] for k, v in check["stats"]["splits"].items()} == {"train": 5, "val": 1, "test": 1}
    stage_log = (out / "2_train" / "stage.log").read_text()
    assert "warning: 3 classes have fewer than 10 boxes" in stage_log  # shown before training


def test_pipeline_on_labelimg_folder(tmp_path):
    """XML beside the images, no split folders: the seeded ratio split, read as it is."""
    check = _pipeline(_export("voc-labelimg-beside", tmp_path), tmp_path / "run")
    assert check["layout"] == "VOC XML beside the images" and check["classes"] == lf.CLASSES and check["ok"]
    assert sum(v["images"] for v in check["stats"]["splits"].values()) == len(lf.IMAGES)
