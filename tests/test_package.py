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
