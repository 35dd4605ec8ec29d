"""The target registry drives names, help, validation and toolchain checks (no conversions here)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from edgedet.convert import registry
from edgedet.convert.api import check_needs, convert
from edgedet.errors import ConfigError, ToolchainError

EXPECTED = [
    "tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8", "edgetpu",
    "onnx", "onnx-int8", "openvino-fp32", "openvino-fp16", "openvino-int8",
]


def test_every_target_registered_once_in_order():
    assert registry.target_names() == EXPECTED


def test_file_naming():
    t = registry.get_target
    assert t("tflite-int8").filename("lite0") == "lite0_tflite-int8.tflite"
    assert t("edgetpu").filename("lite0") == "lite0_edgetpu.tflite"
    assert t("onnx-int8").filename("lite0") == "lite0_onnx-int8.onnx"
    assert t("openvino-fp16").filename("lite0") == "lite0_openvino-fp16"
    assert t("openvino-fp16").is_folder and not t("onnx").is_folder
    names = {registry.TARGETS[n].filename("x") for n in EXPECTED}
    assert len(names) == len(EXPECTED)  # no two targets write the same file


def test_needs():
    int8 = {n for n, t in registry.TARGETS.items() if t.needs == "calib|qat"}
    assert int8 == {"tflite-int8", "edgetpu", "onnx-int8", "openvino-int8"}


def test_unknown_target_did_you_mean():
    with pytest.raises(ConfigError) as e:
        registry.get_target("tflite-in8")
    msg = str(e.value)
    assert "did you mean 'tflite-int8'" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match="openvino-fp16"):
        registry.resolve_targets(["onnx", "openvino_fp16"])


def test_resolve_dedups_and_keeps_order():
    ts = registry.resolve_targets(["onnx", "tflite-fp32", "onnx"])
    assert [t.name for t in ts] == ["onnx", "tflite-fp32"]


def test_help_lists_every_target():
    text = registry.help_text()
    for n in EXPECTED:
        assert n in text


def test_missing_toolchain_names_pip_package(monkeypatch):
    real = importlib.util.find_spec

    def fake(name, *a, **k):
        return None if name == "openvino" else real(name, *a, **k)

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    with pytest.raises(ToolchainError) as e:
        registry.get_target("openvino-fp32").check_toolchain()
    assert 'pip install "edgedet[convert]"' in str(e.value) and "\n" not in str(e.value)
    # convert() checks toolchains before loading anything (the run folder need not exist)
    with pytest.raises(ToolchainError, match="openvino"):
        convert(["onnx", "openvino-fp16"], weights="/nonexistent/run")


def test_int8_needs_qat_or_calibration():
    ts = registry.resolve_targets(["tflite-fp32", "tflite-int8"])
    with pytest.raises(ConfigError) as e:
        check_needs(ts, "float", None)
    assert "--calib-data" in str(e.value) and "QAT" in str(e.value) and "\n" not in str(e.value)
    check_needs(ts, "float", "some/folder")
    check_needs(registry.resolve_targets(["tflite-int8", "openvino-int8"]), "qat", None)
    with pytest.raises(ConfigError, match="float run"):  # a QAT run has no float export
        check_needs(ts, "qat", None)


def test_device_profile_targets_are_registered():
    devices = pytest.importorskip("edgedet.devices")
    for prof in devices.load_all():
        for t in prof.targets:
            registry.get_target(t)


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "edgedet", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_cli_help_and_errors(tmp_path):
    r = _cli("convert", "--help")
    assert r.returncode == 0
    for n in EXPECTED:
        assert n in r.stdout
    r = _cli("convert", "--weights", str(tmp_path), "--target", "onxx")
    assert r.returncode == 2
    assert "did you mean 'onnx'" in r.stderr and "Traceback" not in r.stderr
    r = _cli("convert", "--weights", str(tmp_path), "--target", "tflite-fp32")
    assert r.returncode == 2 and "run.json" in r.stderr and "Traceback" not in r.stderr


def test_cli_is_import_light():
    code = "import sys, edgedet.convert.cli, edgedet.convert.registry; print(any(m.split('.')[0] in ('tensorflow', 'openvino', 'onnx2tf', 'tf2onnx', 'tf_keras') for m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "False"


def test_options_no_target_uses_are_said_and_missing_calibration_data_refused(tmp_path, capsys):
    from edgedet.cli import main
    from edgedet.convert.api import _unused_options
    from edgedet.convert.registry import resolve_targets

    onnx = resolve_targets(["onnx"])
    notes = _unused_options(onnx, nms=False, nms_score=0.3, io_dtype="int8", max_drop=None, val_data="d", val_split="val")
    assert [n.split()[0] for n in notes] == ["--nms-score", "--io", "--val-data"]
    assert _unused_options(resolve_targets(["tflite-int8"]), False, None, "int8", 1.0, "d", "test") == []
    notes = _unused_options(resolve_targets(["tflite-int8"]), True, 0.3, "int8", 1.0, "d", "test", nms_per_class=True)
    assert len(notes) == 1 and "MediaPipe" in notes[0]  # an int8-input --nms file: MediaPipe will not open it
    assert _unused_options(onnx, False, None, "uint8", None, None, "val", nms_per_class=True)[0].startswith("--nms-per-class")
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text('{"kind": "float"}')
    assert main(["convert", "--weights", str(run), "--target", "tflite-int8", "--calib-data", str(tmp_path / "nope")]) == 2
    assert "no such dataset, image folder or list" in capsys.readouterr().err


def test_from_takes_only_onnx_files(tmp_path, capsys):
    from edgedet.cli import main

    (tmp_path / "m.tflite").write_bytes(b"TFL3")
    assert main(["convert", "--from", str(tmp_path / "m.tflite"), "--target", "onnx"]) == 2
    assert "not an .onnx file" in capsys.readouterr().err


def test_out_that_is_a_file_is_refused_up_front(tmp_path, capsys):
    from edgedet.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text('{"kind": "float"}')
    (tmp_path / "afile").write_text("x")
    assert main(["convert", "--weights", str(run), "--target", "onnx", "--out", str(tmp_path / "afile")]) == 2
    assert "--out" in capsys.readouterr().err and (tmp_path / "afile").read_text() == "x"


def test_a_profile_on_a_qat_run_exports_its_int8_targets_with_a_note(tmp_path, capsys):
    import argparse

    from edgedet.convert.cli import _targets

    run = tmp_path / "qat"
    run.mkdir()
    (run / "run.json").write_text('{"kind": "qat"}')
    args = argparse.Namespace(target=[], device="x86-cpu", weights=str(run))
    assert _targets(args) == ["tflite-int8", "openvino-int8"]
    assert "convert the float run for tflite-fp32, onnx, openvino-fp32" in capsys.readouterr().err
    (run / "run.json").write_text('{"kind": "float"}')
    assert _targets(args) == ["tflite-fp32", "tflite-int8", "onnx", "openvino-fp32", "openvino-int8"]


def _export_that_fails(ctx, target, tmp, meta):
    raise ConfigError("--max-drop 0.0: the best mixed model still drops 0.223 AP")


def test_a_single_failed_target_is_one_line_and_leaves_no_empty_out(tmp_path):
    import types

    from edgedet.convert.api import run_targets
    from edgedet.convert.registry import Target

    t = Target("tflite-int8", "test", ".tflite", "tflite", f"{__name__}:_export_that_fails")
    logged = []
    ctx = types.SimpleNamespace(source=types.SimpleNamespace(meta_for=lambda name: None), log=logged.append)
    with pytest.raises(ConfigError, match=r"export failed for tflite-int8: --max-drop 0.0: the best") as exc:
        run_targets(ctx, [t], str(tmp_path / "out"), "m")
    assert "\n" not in str(exc.value) and logged == []  # said once, by the error itself
    assert not (tmp_path / "out").exists()


def test_ctrl_c_during_calibration_stops_the_conversion():
    """TensorFlow swallows a KeyboardInterrupt raised in the calibration callback and returns; the
    wrapper notes the signal and raises it once convert() is back. In a process of its own: the
    signal goes to the whole process, and a test worker must not receive it."""
    import subprocess
    import sys

    script = """
import os, signal
from edgedet.convert.tflite_converter import run_converter

class Swallowing:  # what TensorFlow's converter does with an interrupt in the dataset callback
    def convert(self):
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            pass
        return b"model"

before = signal.getsignal(signal.SIGINT)
assert run_converter(type("Quiet", (), {"convert": lambda self: b"ok"})()) == b"ok"
try:
    run_converter(Swallowing())
except KeyboardInterrupt:
    assert signal.getsignal(signal.SIGINT) is before  # restored
    print("interrupted")
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "interrupted", r.stderr[-2000:]
