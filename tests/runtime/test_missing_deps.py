"""Every command a runtime-only install offers, run with one optional module made unimportable:
a one-line error naming the pip extra that brings it, never a traceback.

The module is blocked by a meta-path finder in a fresh interpreter, so the command sees exactly
what a device without that package sees.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

from edgedet.extras import OPTIONAL_MODULES

REPO = Path(__file__).resolve().parents[2]

BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    names = set(sys.argv[1].split(","))
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
from edgedet.cli import main
sys.exit(main(sys.argv[2:]))
"""


def run_blocked(blocked: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    return subprocess.run([sys.executable, "-c", BLOCKER, blocked, *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=120)


def _coco(root: Path) -> Path:
    from PIL import Image

    (root / "images").mkdir()
    Image.new("RGB", (64, 48), (90, 120, 30)).save(root / "images" / "a.jpg")
    ann = ('{"images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}], "categories": '
           '[{"id": 1, "name": "red"}], "annotations": [{"id": 1, "image_id": 1, "category_id": 1, '
           '"bbox": [4, 4, 20, 20], "area": 400, "iscrowd": 0}]}')
    (root / "test.json").write_text(ann)
    return root / "test.json"


def test_each_runtime_command_names_the_extra(tmp_path, rt_models):
    model = rt_models.tflite("int8")
    data = _coco(tmp_path)
    image = tmp_path / "images" / "a.jpg"
    cases = [  # (blocked modules, command, expected text in the one error line)
        ("ai_edge_litert,tflite_runtime", ["detect", "--model", model, image], 'pip install "edgedet[runtime]"'),
        ("PIL", ["detect", "--model", model, image], 'pip install "edgedet[runtime]" (brings Pillow)'),
        ("cv2", ["camera", "--model", model, "--source", tmp_path / "clip.mp4", "--headless"],
         'pip install "edgedet[camera]"'),
        ("pycocotools", ["validate", "--models", model, "--data", data, "--out", tmp_path / "r"],
         'edgedet validate needs the Python module \'pycocotools\', which is not installed: '
         'pip install "edgedet[device]"'),
        ("matplotlib", ["validate", "--models", model, "--data", data, "--out", tmp_path / "r"],
         'report.html needs the Python module \'matplotlib\', which is not installed: pip install '
         '"edgedet[device]" (brings matplotlib); or pass --no-html'),
        ("yaml", ["data", "check", tmp_path / "data.yaml"], 'pip install "edgedet[device]" (brings pyyaml)'),
    ]
    (tmp_path / "clip.mp4").write_bytes(b"\0" * 64)
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images\nval: images\nnames: [red]\n")
    for blocked, args, expect in cases:
        r = run_blocked(blocked, *args, cwd=tmp_path)
        err = r.stderr.strip()
        assert r.returncode != 0 and "Traceback" not in err, (args, err[-1500:])
        last = err.splitlines()[-1]
        assert last.startswith("edgedet: error:") and expect in last, (blocked, args, err[-800:])
    assert not (tmp_path / "r").exists()  # validate stopped before running any model
    # bench keeps going over its models and reports each one's error in its row
    r = run_blocked("ai_edge_litert,tflite_runtime", "bench", "--models", model, "--runs", "1", cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr + r.stdout
    assert '❌ no TFLite interpreter found: `pip install "edgedet[runtime]"`' in r.stdout


def test_commands_that_need_no_optional_module(tmp_path):
    heavy = "matplotlib,pycocotools,yaml,cv2,tensorflow,tf_keras,onnxruntime,openvino"
    r = run_blocked(heavy, "devices", cwd=tmp_path)
    assert r.returncode == 0 and "raspberry-pi-5" in r.stdout, r.stderr
    r = run_blocked(heavy, "info", "lite0", cwd=tmp_path)
    assert r.returncode == 0 and "lite0" in r.stdout, r.stderr
    r = run_blocked(heavy, "report", "merge", tmp_path / "a.json", tmp_path / "b.json", "--out", tmp_path / "m",
                    cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().startswith("edgedet: error:") and "no such report" in r.stderr


def test_every_optional_module_names_a_package_its_extra_lists():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for module, (dist, extra) in OPTIONAL_MODULES.items():
        listed = [req.split(";")[0].split("[")[0].strip() for req in extras[extra]]
        names = {n.split(">")[0].split("<")[0].split("=")[0].split("!")[0].lower() for n in listed}
        assert dist.lower() in names, (module, dist, extra)
