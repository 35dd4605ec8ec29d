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


def test_pipeline_on_roboflow_yolo_export(tmp_path):
    data, out = _export("yolo-roboflow-yaml", tmp_path), tmp_path / "run"
    cmd = [sys.executable, "-m", "edgedet", "pipeline", "--data", str(data), "--out", str(out),
           "--model", "test", "--image-size", "64", "--epochs", "1", "--qat-epochs", "1", "--batch", "4",
           "--backbone-weights", "none", "--targets", "tflite-fp32"]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=1500)
    assert r.returncode in (0, 1), r.stdout[-3000:] + r.stderr[-3000:]
    check = json.loads((out / "1_data" / "check.json").read_text())
    assert check["classes"] == lf.CLASSES and check["ok"] and check["layout"] == "YOLO data YAML (data.yaml)"
    assert {k: v["images"] for k, v in check["stats"]["splits"].items()} == {"train": 5, "val": 1, "test": 1}
    assert (out / "1_data" / "stats.png").stat().st_size > 10_000
    stage_log = (out / "2_train" / "stage.log").read_text()
    assert "warning: 3 classes have fewer than 10 boxes" in stage_log  # shown before training
    rep = json.loads((out / "5_validate" / "report.json").read_text())
    fp32 = next(m for m in rep["models"] if m["target"] == "tflite-fp32")
    assert fp32["status"] in ("pass", "miss"), fp32.get("error")  # a 1-epoch model may miss a threshold


def test_pipeline_data_stage_on_labelimg_folder(tmp_path):
    """The commands the pipeline runs on a LabelImg folder (XML beside the images) read it as it is.

    Training, QAT, calibration and validation all load the dataset the way ``data check`` does
    (``load_checked``), so the data stage plus the plan stand for the whole run here.
    """
    from edgedet.cli import build_parser
    from edgedet.pipeline import plan

    data = _export("voc-labelimg-beside", tmp_path)
    args = build_parser().parse_args(["pipeline", "--data", str(data), "--out", str(tmp_path / "run")])
    stages = plan(args)
    for cmd in stages[0].commands:
        target = cmd[-1][1:] if cmd[-1].startswith(">") else None
        cmd = cmd[:-1] if target else cmd
        r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        if target:
            check = json.loads(r.stdout)
    assert check["layout"] == "VOC XML beside the images" and check["classes"] == lf.CLASSES and check["ok"]
    assert sum(v["images"] for v in check["stats"]["splits"].values()) == len(lf.IMAGES)
    assert (tmp_path / "run" / "1_data" / "stats.png").is_file()
    train_cmd = stages[1].commands[0]
    assert train_cmd[train_cmd.index("--data") + 1] == str(data.resolve())
