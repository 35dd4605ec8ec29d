"""Device profiles: all shipped profiles validate; bad ones name their file and field."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from edgedet.devices import PROFILE_DIR, list_profiles, load_all, load_profile, parse_profile
from edgedet.errors import ConfigError

EXPECTED = {"x86-cpu", "raspberry-pi-4", "raspberry-pi-5", "coral-usb", "coral-pcie", "android-nnapi",
            "intel-cpu", "intel-gpu", "intel-npu"}


def test_every_shipped_profile_validates():
    assert EXPECTED <= set(list_profiles())
    for p in load_all():
        assert p.targets and p.backend in ("litert", "onnxruntime", "openvino")
        assert 0 < p.max_map_drop < 1 and p.input_size % 64 == 0
        # a budget names its published source; without one the profile says it is unmeasured
        assert (p.latency_ms is None) == p.latency_source.startswith("unmeasured"), p.name
        assert p.latency_ms is None or (p.latency_ms > 0 and "37.4 ms" in p.latency_source)
    x86 = load_profile("x86-cpu")
    assert set(x86.targets) == {"tflite-fp32", "tflite-int8", "onnx", "openvino-fp32", "openvino-int8"}
    assert x86.device_for("openvino") == "CPU" and x86.device_for("onnxruntime") == "cpu"
    usb = load_profile("coral-usb")
    assert (usb.delegate, usb.device, usb.target) == ("edgetpu", "usb:0", "edgetpu")
    assert load_profile("coral-pcie").device == "pci:0"
    assert load_profile("intel-npu").device == "NPU"
    with pytest.raises(ConfigError, match="coral-usb.*litert"):
        usb.device_for("openvino")


def test_unknown_profile_did_you_mean():
    with pytest.raises(ConfigError, match="did you mean 'raspberry-pi-5'"):
        load_profile("raspbery-pi-5")


GOOD = (PROFILE_DIR / "raspberry-pi-5.toml").read_text()


@pytest.mark.parametrize("edit,field", [
    (lambda s: s.replace('backend = "litert"', 'backend = "tensorrt"'), "backend"),
    (lambda s: s.replace("threads = 4", 'threads = "four"'), "threads"),
    (lambda s: s.replace("input_size = 320", "input_size = 300"), "input_size"),
    (lambda s: s.replace('"tflite-int8"', '"tflite-int4"'), "targets"),
    (lambda s: s.replace("max_map_drop = 0.02", "max_map_drop = 2"), "max_map_drop"),
    (lambda s: s.replace("[thresholds]", "[thresholds]\nlatency_ms = inf"), "latency_ms"),
    (lambda s: s.replace('delegate = "xnnpack"', 'delegate = "edgetpu"'), "targets"),
    (lambda s: s.replace('latency_source = "unmeasured', 'latency_source = "measured'), "latency_ms"),
    (lambda s: s.replace("latency_source", "latency_sauce"), "latency_sauce"),
    (lambda s: s.replace('delegate = "xnnpack"', 'delegat = "xnnpack"'), "delegat"),
    (lambda s: s.replace('name = "raspberry-pi-5"', 'name = "pi5"'), "name"),
    (lambda s: s.replace("[thresholds]", "[thresholds\n"), None),
])
def test_bad_profile_names_file_and_field(tmp_path, monkeypatch, edit, field):
    bad = tmp_path / "raspberry-pi-5.toml"
    bad.write_text(edit(GOOD))
    with pytest.raises(ConfigError) as e:
        parse_profile(bad)
    msg = str(e.value)
    assert str(bad) in msg and "\n" not in msg
    if field:
        assert f"'{field}'" in msg
    else:
        assert "not valid TOML" in msg
    # the same through the search path: a user dir shadows the shipped profile
    monkeypatch.setenv("EDGEDET_DEVICES", str(tmp_path))
    with pytest.raises(ConfigError, match=str(bad)):
        load_profile("raspberry-pi-5")


def test_user_profile_dir(tmp_path, monkeypatch):
    shutil.copy(PROFILE_DIR / "x86-cpu.toml", tmp_path / "my-box.toml")
    (tmp_path / "my-box.toml").write_text((tmp_path / "my-box.toml").read_text().replace('name = "x86-cpu"', 'name = "my-box"'))
    monkeypatch.setenv("EDGEDET_DEVICES", str(tmp_path))
    assert "my-box" in list_profiles() and load_profile("my-box").threads == 2


def test_devices_cli():
    r = subprocess.run([sys.executable, "-m", "edgedet", "devices", "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    names = {p["name"] for p in json.loads(r.stdout)}
    assert EXPECTED <= names
    r = subprocess.run([sys.executable, "-m", "edgedet", "devices"], capture_output=True, text=True)
    assert r.returncode == 0 and "coral-usb" in r.stdout and "usb:0" in r.stdout
    r = subprocess.run([sys.executable, "-m", "edgedet", "devices", "coral-usbb"], capture_output=True, text=True)
    assert r.returncode == 2 and "did you mean 'coral-usb'" in r.stderr


def test_a_broken_user_profile_is_named_and_the_others_still_listed(tmp_path, monkeypatch, capsys):
    from edgedet.cli import main

    (tmp_path / "mine.toml").write_bytes(b'name = "mine"\ndescription = "\xff\xfe not utf-8"\n')
    monkeypatch.setenv("EDGEDET_DEVICES", str(tmp_path))
    assert main(["devices"]) == 0
    captured = capsys.readouterr()
    assert "mine.toml: not valid TOML" in captured.err and "left out" in captured.err
    assert "raspberry-pi-4" in captured.out and "coral-usb" in captured.out
    assert main(["devices", "mine"]) == 2
    assert "mine.toml: not valid TOML" in capsys.readouterr().err
