"""Package-level checks: the runtime stays TensorFlow-free, the CLI loads."""
from __future__ import annotations

import subprocess
import sys


def test_runtime_import_does_not_import_tensorflow():
    code = (
        "import sys, edgedet.runtime, edgedet.runtime.detector, edgedet.runtime.metadata;"
        "heavy=[m for m in ('tensorflow','tf_keras','keras','onnx2tf','tf2onnx','openvino','torch') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_cli_help_lists_commands():
    r = subprocess.run([sys.executable, "-m", "edgedet", "--help"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "edgedet" in r.stdout


def test_cli_raises_when_a_stage_cli_fails_to_import():
    """A sub-command module that cannot be imported is an error, not a silently missing command."""
    code = ("import sys; sys.modules['edgedet.devices.cli'] = None\n"  # makes `import edgedet.devices.cli` fail
            "from edgedet.cli import main\nsys.exit(main(['--help']))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode != 0, r.stdout
    assert "ModuleNotFoundError" in r.stderr and "edgedet.devices.cli" in r.stderr
