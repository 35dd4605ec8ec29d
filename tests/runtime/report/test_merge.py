"""`edgedet report merge`: two devices side by side, mismatched reports refused, HTML in headless Chromium."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("pycocotools")

from edgedet.cli import main  # noqa: E402
from edgedet.runtime.detections import Detections  # noqa: E402
from edgedet.runtime.report.build import assemble, latency_block, model_entry, write_report  # noqa: E402
from edgedet.runtime.report.evaluate import coco_evaluate  # noqa: E402
from edgedet.runtime.report.validate import dataset_fingerprint, model_sha256  # noqa: E402

NAMES = ("RBC", "WBC", "Platelets")
_spec = importlib.util.spec_from_file_location("report_render", Path(__file__).with_name("test_report.py"))
_render = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_render)


def _samples(n=10):
    rng = np.random.default_rng(0)
    samples, dets = [], []
    for i in range(n):
        xy = rng.uniform(0, 200, (3, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(20, 80, (3, 2))], 1).astype(np.float32)
        cls = rng.integers(0, 3, 3).astype(np.int32)
        samples.append(SimpleNamespace(image_path=f"/data/img{i}.jpg", width=320, height=320, boxes=boxes,
                                       classes=cls, image_id=i))
        dets.append(Detections(boxes, np.linspace(0.9, 0.5, 3).astype(np.float32), cls, NAMES))
    return samples, dets


def _shift(dets, px):
    return [Detections(d.boxes + px * (d.classes == 1)[:, None], d.scores, d.classes, d.labels) for d in dets]


def device_report(out: Path, machine: str, int8_shift: float, ms: float, int8_sha="b" * 64,
                  samples=None) -> Path:
    """A validation report as `edgedet validate` writes it on one machine: an fp32 baseline, an int8 file."""
    if samples is None:
        samples, dets = _samples()
    else:
        dets = [Detections(s.boxes, np.full(len(s.boxes), 0.9, np.float32), s.classes, NAMES) for s in samples]
    rng = np.random.default_rng(1)

    def lat():
        pre, inv, post = rng.gamma(4, 0.1, 30), rng.gamma(9, ms / 9, 30), rng.gamma(4, 0.2, 30)
        return latency_block(50.0, ms * 2, pre, inv, post, pre + inv + post)

    prov = {"backend": "litert", "backend_version": "2.3.0", "delegate": "xnnpack", "threads": 4, "device": None}
    models = [
        model_entry("m_fp32.tflite", "/x/m_fp32.tflite", "baseline", "tflite", coco_evaluate(samples, dets, NAMES),
                    lat(), target="tflite-fp32", sha256="a" * 64, provenance=prov, file_size_bytes=9_000_000),
        model_entry("m_int8.tflite", "/x/m_int8.tflite", "candidate", "tflite",
                    coco_evaluate(samples, _shift(dets, int8_shift), NAMES), lat(), target="tflite-int8",
                    sha256=int8_sha, provenance=prov, quantization={"method": "qat"}, file_size_bytes=3_000_000),
    ]
    ds = {"path": f"/{machine}/data", "split": "test", "num_images": len(samples), "class_names": list(NAMES),
          "fingerprint": dataset_fingerprint(samples, NAMES)}
    report = assemble(models, ds, {"max_ap_drop": 0.05})
    report["host"].update(machine=machine, cpu_model=f"{machine} CPU",
                          cpu_features=["asimd", "asimddp"] if machine == "aarch64" else ["avx2", "fma"])
    write_report(report, out, html=False)
    return out / "report.json"


def test_merge_two_devices(tmp_path, capsys):
    x86 = device_report(tmp_path / "x86", "x86_64", 2.0, 3.0)
    arm = device_report(tmp_path / "pi", "aarch64", 6.0, 40.0)
    rc = main(["report", "merge", str(x86), str(arm.parent), "--out", str(tmp_path / "merged")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "AP aarch64 − x86_64" in printed and "2 models on 2 devices" in printed
    merged = json.loads((tmp_path / "merged" / "report.json").read_text())
    assert [d["name"] for d in merged["devices"]] == ["x86_64", "aarch64"]
    assert merged["devices"][1]["cpu_features"] == ["asimd", "asimddp"]
    assert merged["devices"][0]["kernels"] == "litert 2.3.0 + xnnpack"
    base, int8 = merged["models"]
    assert base["role"] == "baseline" and base["devices"][1]["ap_vs_first"] == pytest.approx(0.0)
    x, a = int8["devices"]
    assert a["metrics"]["AP"] < x["metrics"]["AP"]  # the larger shift on "arm" costs more AP
    assert a["ap_vs_first"] == pytest.approx(a["metrics"]["AP"] - x["metrics"]["AP"])
    assert a["delta"]["AP"] < x["delta"]["AP"] < 0
    assert a["latency"]["end_to_end_p50"] > 5 * x["latency"]["end_to_end_p50"]
    md = (tmp_path / "merged" / "report.md").read_text()
    assert "## Accuracy per device" in md and "| m_int8.tflite | WBC |" in md
    row = next(ln for ln in md.splitlines() if "m_int8" in ln and "tflite-int8" in ln)
    assert row.split("|")[-2].strip().startswith("-")  # arm64 minus x86, the same file: negative


def test_merge_refuses_other_files_and_datasets(tmp_path, capsys):
    x86 = device_report(tmp_path / "x86", "x86_64", 2.0, 3.0)
    other_file = device_report(tmp_path / "pi", "aarch64", 2.0, 40.0, int8_sha="c" * 64)
    assert main(["report", "merge", str(x86), str(other_file), "--out", str(tmp_path / "m1")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "reports of different files (matched by sha256)" in err
    assert "only in" in err and "m_int8.tflite (bbbbbbbbbbbb)" in err and "m_int8.tflite (cccccccccccc)" in err
    samples, _ = _samples()
    samples[3].boxes = samples[3].boxes + 5.0  # same images, one image's labels moved
    other_data = device_report(tmp_path / "pi2", "aarch64", 2.0, 40.0, samples=samples)
    assert main(["report", "merge", str(x86), str(other_data), "--out", str(tmp_path / "m2")]) == 2
    err = capsys.readouterr().err.strip()
    assert "are of different datasets" in err and "fingerprint" in err
    assert main(["report", "merge", str(x86), str(tmp_path / "nothing"), "--out", str(tmp_path / "m3")]) == 2
    assert "no such report" in capsys.readouterr().err
    assert not (tmp_path / "m1").exists() and not (tmp_path / "m2").exists()


def test_model_sha256_and_dataset_fingerprint(tmp_path):
    from edgedet.files import sha256_file

    (tmp_path / "m.tflite").write_bytes(b"x" * 100)
    assert model_sha256(str(tmp_path / "m.tflite")) == sha256_file(tmp_path / "m.tflite")
    (tmp_path / "m.xml").write_text("<net/>")
    (tmp_path / "m.bin").write_bytes(b"w1")
    h1 = model_sha256(str(tmp_path / "m.xml"))
    (tmp_path / "m.bin").write_bytes(b"w2")
    assert model_sha256(str(tmp_path / "m.xml")) != h1  # the weights are part of the model
    samples, _ = _samples()
    moved = [SimpleNamespace(**{**vars(s), "image_path": "/elsewhere/" + Path(s.image_path).name}) for s in samples]
    assert dataset_fingerprint(samples, NAMES) == dataset_fingerprint(moved, NAMES)  # paths do not count
    assert dataset_fingerprint(samples[:-1], NAMES) != dataset_fingerprint(samples, NAMES)


@pytest.mark.skipif(_render._chromium() is None, reason="chromium not installed (apt-get install chromium)")
def test_merged_html_renders_in_chromium(tmp_path):
    x86 = device_report(tmp_path / "x86", "x86_64", 2.0, 3.0)
    arm = device_report(tmp_path / "pi", "aarch64", 6.0, 40.0)
    assert main(["report", "merge", str(x86), str(arm), "--out", str(tmp_path / "m"), "--names", "workstation",
                 "raspberry-pi-5"]) == 0
    page = tmp_path / "m" / "report.html"
    assert "http://" not in page.read_text().replace("http://www.w3.org/2000/svg", "")
    dom = _render.render_in_chromium(page, tmp_path, screenshot=tmp_path / "shot.png")
    status = dom[dom.index('id="render-status"'):].split(">")[0]
    assert 'data-ok="1"' in status and 'data-images="1"' in status, status
    assert "AP raspberry-pi-5 − workstation" in dom and "litert 2.3.0 + xnnpack" in dom
    assert (tmp_path / "shot.png").stat().st_size > 10_000


def test_merge_leaves_out_the_host_only_float_twin(tmp_path, capsys):
    """The workstation's report has a QAT run's float twin (a Keras row); the device's cannot."""
    x86 = device_report(tmp_path / "x86", "x86_64", 2.0, 3.0)
    arm = device_report(tmp_path / "pi", "aarch64", 6.0, 40.0)
    report = json.loads(x86.read_text())
    twin = dict(report["models"][0], name="float twin (3_qat)", role="twin", format="keras", sha256="d" * 64)
    report["models"].insert(1, twin)
    x86.write_text(json.dumps(report))
    assert main(["report", "merge", str(x86), str(arm), "--out", str(tmp_path / "merged")]) == 0
    printed = capsys.readouterr().out
    assert "left out (host-only Keras rows, no file a device runs): float twin (3_qat)" in printed
    merged = json.loads((tmp_path / "merged" / "report.json").read_text())
    assert [m["name"] for m in merged["models"]] == ["m_fp32.tflite", "m_int8.tflite"]
    assert merged["left_out"] == ["float twin (3_qat)"]
    assert "left out (host-only Keras rows): float twin (3_qat)" in (tmp_path / "merged" / "report.md").read_text()


def test_merge_refuses_the_same_report_twice_and_writing_over_an_input(tmp_path, capsys):
    x86 = device_report(tmp_path / "x86", "x86_64", 2.0, 3.0)
    arm = device_report(tmp_path / "pi", "aarch64", 6.0, 40.0)
    before = arm.read_bytes()
    assert main(["report", "merge", str(x86), str(x86.parent), "--out", str(tmp_path / "m")]) == 2
    assert "given twice" in capsys.readouterr().err
    assert main(["report", "merge", str(x86), str(arm), "--out", str(arm.parent)]) == 2
    assert "holds one of the reports being merged" in capsys.readouterr().err
    assert main(["report", "merge", str(x86), str(arm), "--names", "pi", "pi", "--out", str(tmp_path / "m")]) == 2
    assert "'pi' given twice" in capsys.readouterr().err
    assert arm.read_bytes() == before and not (tmp_path / "m").exists()


def test_merge_warns_when_a_column_cannot_be_its_device(tmp_path, capsys):
    """A 'raspberry-pi-4' report made on x86-64, and two columns from the same kind of host."""
    x86 = device_report(tmp_path / "x86", "x86_64", 2.0, 3.0)
    fake = device_report(tmp_path / "fake-pi", "x86_64", 2.0, 3.0)
    report = json.loads(fake.read_text())
    report["thresholds"]["device"] = "raspberry-pi-4"
    fake.write_text(json.dumps(report))
    assert main(["report", "merge", str(x86), str(fake), "--out", str(tmp_path / "m")]) == 0
    printed = capsys.readouterr().out
    merged = json.loads((tmp_path / "m" / "report.json").read_text())
    assert merged["warnings"][0] == "raspberry-pi-4: made on x86_64, where profile raspberry-pi-4 describes an aarch64 device"
    assert "ran on the same kind of host (x86_64, x86_64 CPU)" in merged["warnings"][1]
    assert f"warning: {merged['warnings'][0]}" in printed
    assert merged["warnings"][0] in (tmp_path / "m" / "report.md").read_text()
    arm = device_report(tmp_path / "pi", "aarch64", 6.0, 40.0)  # a real pair: nothing to say
    assert main(["report", "merge", str(x86), str(arm), "--out", str(tmp_path / "m2")]) == 0
    assert json.loads((tmp_path / "m2" / "report.json").read_text())["warnings"] == []


def test_validate_notes_a_profile_for_another_architecture():
    from edgedet.devices import load_profile

    pi = load_profile("raspberry-pi-4")
    assert pi.arch == "aarch64" and pi.other_host("aarch64") is None and pi.other_host("arm64") is None
    assert "describes an aarch64 device, and this host is x86_64" in pi.other_host("x86_64")
    assert load_profile("coral-usb").other_host("x86_64") is None  # a USB stick: any host
