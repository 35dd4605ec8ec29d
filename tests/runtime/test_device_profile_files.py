"""A device profile given as a .toml path, an --nms file's note and the tflite-runtime backend name,
on the tiny exported models of tests/runtime/conftest.py."""
from __future__ import annotations

import sys
import types

import pytest

from edgedet.cli import main
from edgedet.errors import ConfigError

pytestmark = pytest.mark.slow  # conftest exports the model files with TensorFlow first


@pytest.fixture
def my_profile(tmp_path):
    """x86-cpu copied under another name into a folder edgedet does not search."""
    from edgedet.devices import PROFILE_DIR

    text = (PROFILE_DIR / "x86-cpu.toml").read_text().replace('name = "x86-cpu"', 'name = "my-box"')
    text = text.replace("threads = 2", "threads = 1")
    path = tmp_path / "myprof" / "my-box.toml"
    path.parent.mkdir()
    path.write_text(text)
    return path


def test_a_profile_toml_path_works_as_device(rt_models, rt_image, my_profile, tmp_path, capsys):
    from edgedet.devices import load_profile
    from edgedet.runtime.detector import Detector

    model = rt_models.tflite("int8")
    for device in (str(my_profile), my_profile, load_profile(str(my_profile))):
        det = Detector.from_file(model, device=device)
        assert det.describe()["threads"] == 1 and det.backend.device == "CPU"  # the profile's threads
    assert len(det.detect(rt_image)) == len(Detector.from_file(model, threads=1).detect(rt_image))
    from PIL import Image

    Image.fromarray(rt_image).save(tmp_path / "img.png")
    assert main(["detect", "--model", model, "--device", str(my_profile), str(tmp_path / "img.png"), "--json"]) == 0
    assert '"threads": 1' in capsys.readouterr().out
    # bench (and validate, through the same helper) hand the profile's file on to the Detector
    from edgedet.runtime.report.bench import bench

    (row,) = bench([model], device=str(my_profile), runs=1, warmup=1, progress=False)
    assert row["error"] is None and row["threads"] == 1


def test_a_bad_profile_path_gives_the_loaders_error(rt_models, my_profile, tmp_path):
    from edgedet.runtime.detector import Detector

    model = rt_models.tflite("int8")
    with pytest.raises(ConfigError, match=r"nope\.toml: no such device profile file$"):
        Detector.from_file(model, device=str(tmp_path / "nope.toml"))
    my_profile.write_text(my_profile.read_text().replace('backend = "litert"', 'backend = "litrt"'))
    with pytest.raises(ConfigError, match=r"my-box\.toml: field 'backend' has invalid value 'litrt'"):
        Detector.from_file(model, device=str(my_profile))


def test_nms_file_says_which_options_it_ignores(rt_models, rt_image, tmp_path, capsys):
    from PIL import Image

    Image.fromarray(rt_image).save(tmp_path / "img.png")
    model = rt_models.tflite("fp32", nms=True)
    assert main(["detect", "--model", model, str(tmp_path / "img.png"), "--iou", "0.7", "--soft-nms"]) == 0
    notes = [ln for ln in capsys.readouterr().err.splitlines() if "in-graph NMS" in ln]
    assert notes == [f"edgedet: note: {model}: in-graph NMS (score >= 0.05, IoU 0.5, across classes): --iou, --nms "
                     "and --soft-nms have no effect; --score below 0.05 changes nothing"]
    assert main(["detect", "--model", model, str(tmp_path / "img.png"), "--score", "0.4"]) == 0
    assert "in-graph NMS" not in capsys.readouterr().err


def test_tflite_runtime_is_reported_by_its_own_name(rt_models, monkeypatch):
    interpreter = pytest.importorskip("ai_edge_litert.interpreter")

    from edgedet.runtime.detector import Detector

    # LiteRT's own interpreter, found under the tflite_runtime name as on an older Raspberry Pi image
    pkg = types.ModuleType("tflite_runtime")
    pkg.__version__, pkg.interpreter = "2.14.0", interpreter
    monkeypatch.setitem(sys.modules, "tflite_runtime", pkg)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", interpreter)
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # not installed
    d = Detector.from_file(rt_models.tflite("int8")).describe()
    assert (d["backend"], d["version"]) == ("tflite-runtime", "2.14.0")
    from edgedet.runtime.report.merge import _kernels

    row = {"provenance": {"backend": d["backend"], "backend_version": d["version"], "delegate": None}}
    assert _kernels({"models": [row]}) == "tflite-runtime 2.14.0 + XNNPACK (its default CPU delegate)"
