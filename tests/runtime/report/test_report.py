"""Report assembly, JSON schema, Markdown and HTML rendering (HTML checked in headless Chromium)."""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgedet.runtime.detections import Detections
from edgedet.runtime.report.evaluate import coco_evaluate
from edgedet.runtime.report.build import assemble, failed_entry, latency_block, model_entry, write_report
from edgedet.runtime.report.schema import REPORT_SCHEMA, check_schema

NAMES = ("RBC", "WBC", "Platelets")


def _synthetic(seed=0, n=12):
    rng = np.random.default_rng(seed)
    samples, perfect = [], []
    for i in range(n):
        k = int(rng.integers(1, 5))
        xy = rng.uniform(0, 200, (k, 2))
        wh = rng.uniform(20, 80, (k, 2))
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        cls = rng.integers(0, 3, k).astype(np.int32)
        samples.append(SimpleNamespace(width=320, height=320, boxes=boxes, classes=cls, image_id=i))
        perfect.append(Detections(boxes, np.linspace(0.9, 0.5, k).astype(np.float32), cls, NAMES))
    return samples, perfect


def _damaged(dets, cls_hit, shift):
    out = []
    for d in dets:
        b = d.boxes.copy()
        b[d.classes == cls_hit] += shift
        out.append(Detections(b, d.scores, d.classes, d.labels))
    return out


def _lat(rng, ms):
    pre, inv, post = rng.gamma(4, 0.1, 50), rng.gamma(9, ms / 9, 50), rng.gamma(4, 0.2, 50)
    return latency_block(120.0, ms * 3, pre, inv, post, pre + inv + post)


def make_report(max_ap_drop=0.01, budget=None):
    samples, perfect = _synthetic()
    rng = np.random.default_rng(1)
    ev_float = coco_evaluate(samples, perfect, NAMES)
    ev_good = coco_evaluate(samples, _damaged(perfect, 2, 0.1), NAMES)
    ev_bad = coco_evaluate(samples, _damaged(perfect, 1, 12.0), NAMES)
    prov = {"backend": "litert", "backend_version": "2.3", "delegate": "xnnpack", "threads": 2, "device": "CPU"}
    models = [
        model_entry("model-int8.tflite", "/x/model-int8.tflite", "candidate", "tflite", ev_bad, _lat(rng, 4.0),
                    target="tflite-int8", file_size_bytes=5_300_000, macs=1_000_000_000, gmacs_per_s=250.0,
                    provenance=prov, quantization={"method": "ptq"},
                    layer_errors={"source": "/x/diagnosis.json", "kind": "diagnosis", "columns": ["layer", "rmse/scale"],
                                  "rows": [{"layer": "box_net/conv", "rmse/scale": 3.1},
                                           {"layer": "class_net/conv", "rmse/scale": 0.29}]}),
        model_entry("model-fp16.tflite", "/x/model-fp16.tflite", "candidate", "tflite", ev_good, _lat(rng, 9.0),
                    target="tflite-fp16", file_size_bytes=10_000_000, provenance=prov),
        failed_entry("broken.onnx", "/x/broken.onnx", "candidate", "onnx", "ModelFileError: truncated"),
        model_entry("RUN", "/x/run", "baseline", "keras", ev_float, _lat(rng, 30.0)),
    ]
    th = {"device": "x86-cpu", "max_ap_drop": max_ap_drop, "latency_budget_ms": budget}
    ds = {"path": "/data/bccd", "split": "test", "num_images": len(samples), "class_names": list(NAMES)}
    return assemble(models, ds, th, command="edgedet validate ...")


def test_assemble_statuses_deltas_and_exit_code():
    r = make_report()
    names = [m["name"] for m in r["models"]]
    assert names[0] == "RUN" and r["baseline"] == "RUN"  # baseline first
    by = {m["name"]: m for m in r["models"]}
    assert by["RUN"]["status"] == "pass" and by["RUN"]["metrics"]["AP"] == pytest.approx(1.0)
    assert by["model-fp16.tflite"]["status"] == "pass"
    bad = by["model-int8.tflite"]
    assert bad["status"] == "miss" and bad["status_icon"] == "❎"
    assert bad["delta"]["AP"] < -0.01
    # The damage is on WBC only, and the report says so.
    assert bad["per_class"]["WBC"]["delta_ap"] < -0.1
    assert bad["per_class"]["RBC"]["delta_ap"] == pytest.approx(0.0)
    assert "WBC" in bad["reasons"][0]
    assert by["broken.onnx"]["status"] == "fail" and "truncated" in by["broken.onnx"]["error"]
    assert r["summary"] == {"passed": 2, "missed": 1, "failed": 1, "exit_code": 1}


def test_latency_budget_and_no_thresholds():
    r = make_report(max_ap_drop=None, budget=5.0)
    by = {m["name"]: m for m in r["models"]}
    assert by["model-fp16.tflite"]["status"] == "miss"
    assert "over the 5 ms budget" in by["model-fp16.tflite"]["reasons"][0]
    r = make_report(max_ap_drop=None, budget=None)
    assert r["summary"]["missed"] == 0 and r["summary"]["exit_code"] == 1  # the ❌ still fails CI
    assert all(m["status"] != "miss" for m in r["models"])


def test_schema_accepts_report_and_catches_mistakes():
    r = make_report()
    assert check_schema(json.loads(json.dumps(r))) == []
    broken = copy.deepcopy(r)
    broken["models"][1]["status"] = "ok"
    del broken["summary"]["exit_code"]
    broken["models"][0]["metrics"]["AP"] = "high"
    broken["models"][0]["per_class"]["RBC"]["pr_iou50"] = [1.5]
    errs = check_schema(broken)
    assert any("$.models[1].status: 'ok' not in" in e for e in errs)
    assert any("missing required key 'exit_code'" in e for e in errs)
    assert any("$.models[0].metrics.AP: expected number/null" in e for e in errs)
    assert any("pr_iou50[0]: 1.5 > maximum 1" in e for e in errs)
    assert check_schema(True, {"type": "integer"}) != []  # bool is not a JSON number


def test_schema_doc_lists_every_model_field():
    doc = (Path(__file__).resolve().parents[3] / "docs" / "report_schema.md").read_text()
    for key in list(REPORT_SCHEMA["required"]) + list(REPORT_SCHEMA["properties"]["models"]["items"]["required"]):
        assert f"`{key}`" in doc, key


def test_write_report_markdown(tmp_path):
    r = make_report()
    paths = write_report(r, tmp_path, html=False)
    assert json.loads(paths["json"].read_text())["summary"]["exit_code"] == 1
    text = paths["md"].read_text()
    assert "| ❎ | model-int8.tflite | tflite-int8 |" in text
    assert "❌ **broken.onnx** failed to run: `ModelFileError: truncated`" in text
    assert "## Per-layer int8 error (quantize diagnosis): model-int8.tflite" in text and "box_net/conv" in text
    wbc = next(line for line in text.splitlines() if line.startswith("| WBC |"))
    assert "100.00 |" in wbc and "(-" in wbc  # float AP, then the int8 drop
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temp files


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def render_in_chromium(html_path: Path, tmp: Path, screenshot: Path | None = None) -> str:
    """Load the page in headless Chromium and return the DOM after scripts ran."""
    exe = _chromium()
    args = [exe, *CHROME_FLAGS, f"--user-data-dir={tmp / 'chrome-profile'}", "--virtual-time-budget=5000"]
    if screenshot is not None:
        subprocess.run([*args, f"--screenshot={screenshot}", "--window-size=1280,2400", html_path.as_uri()],
                       capture_output=True, timeout=120, check=False)
    res = subprocess.run([*args, "--dump-dom", html_path.as_uri()], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


@pytest.mark.skipif(_chromium() is None, reason="chromium not installed (apt-get install chromium)")
def test_html_renders_in_chromium(tmp_path):
    r = make_report(budget=25.0)
    paths = write_report(r, tmp_path)
    page = paths["html"].read_text()
    assert "http://" not in page and "https://" not in page  # self-contained
    dom = render_in_chromium(paths["html"], tmp_path, screenshot=tmp_path / "shot.png")
    status = dom[dom.index('id="render-status"'):].split(">")[0]
    assert 'data-ok="1"' in status, status
    assert 'data-images="4"' in status  # PR curves, ΔAP bars, latency breakdown, histograms
    for fid in ("fig-pr_curves", "fig-delta_ap", "fig-latency_hist", "fig-latency_breakdown"):
        assert f'id="{fid}"' in dom
    assert "Per-layer int8 error (quantize diagnosis): model-int8.tflite" in dom and "box_net/conv" in dom
    assert (tmp_path / "shot.png").stat().st_size > 10_000


@pytest.mark.skipif(_chromium() is None, reason="chromium not installed (apt-get install chromium)")
def test_chromium_check_catches_a_broken_image(tmp_path):
    paths = write_report(make_report(), tmp_path)
    page = paths["html"].read_text().replace("data:image/png;base64,iVBOR", "data:image/png;base64,AAAA", 1)
    paths["html"].write_text(page)
    dom = render_in_chromium(paths["html"], tmp_path)
    status = dom[dom.index('id="render-status"'):].split(">")[0]
    assert 'data-ok="0"' in status and "fig-" in status


def test_the_html_page_names_the_file_to_ship():
    from edgedet.runtime.report.html import render_html

    r = make_report()
    page = render_html(r)
    rec = r["recommendation"]
    assert "<h2 id='ship'>File to ship</h2>" in page and rec["path"] in page
    assert page.index("File to ship") < page.index("Per-class AP")  # right under the summary


def test_a_device_profile_measured_on_another_architecture_is_flagged():
    from edgedet.runtime.report.md import thresholds_line

    r = make_report()
    r["thresholds"].update(device="raspberry-pi-4", device_arch="aarch64")
    r["host"]["machine"] = "x86_64"
    assert ("the profile describes an aarch64 device, measured on this x86_64 host: the figures are the host's, "
            "not the device's") in thresholds_line(r)
    r["host"]["machine"] = "arm64"  # macOS' spelling of the same architecture
    assert "⚠️" not in thresholds_line(r)


def test_error_bars_share_one_scale_across_the_report():
    """An fp32 file's tiny error must not draw the same full bar as an int8 file's large one."""
    import re

    from edgedet.runtime.report.html import render_html

    r = make_report()
    fp16 = next(m for m in r["models"] if m["name"] == "model-fp16.tflite")
    fp16["layer_errors"] = {"source": "/x", "kind": "outputs", "columns": ["layer", "rmse/scale"],
                            "rows": [{"layer": "class_p3", "rmse/scale": 3e-6}]}
    widths = [int(w) for w in re.findall(r'class="bar" style="width:(\d+)px"', render_html(r))]
    assert max(widths) == 80 and widths[-1] == 0  # int8's worst layer is the full bar; fp16's is a dot
