"""Package-level checks: the runtime stays TensorFlow-free, the CLI loads."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest


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


TOOLCHAIN_NOISE = ("cuInit", "cuda drivers", "oneDNN", "cpu_feature_guard", "rebuild TensorFlow", "absl::InitializeLog",
                   "I0000", "W0000", "XNNPACK delegate")


@pytest.mark.slow
def test_toolchain_start_up_noise_only_with_verbose():
    """A real TensorFlow-loading command prints nothing on stderr; --verbose lets the log lines through."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "EDGEDET_VERBOSE")}
    cmd = [sys.executable, "-m", "edgedet", "info", "test", "--build"]
    quiet = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert quiet.returncode == 0 and "BiFPN" in quiet.stdout, quiet.stderr
    assert quiet.stderr == "", quiet.stderr
    loud = subprocess.run([*cmd, "--verbose"], capture_output=True, text=True, env=env)
    assert loud.returncode == 0 and loud.stdout == quiet.stdout
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] ", loud.stderr, re.M), loud.stderr


def test_stderr_filter_drops_only_toolchain_log_lines():
    """Native writes to fd 2 (as TensorFlow, absl and LiteRT do) pass through the filter; only their
    log-line shapes are dropped, progress bars go through at once, edgedet's own lines stay."""
    code = r"""
import os, time
from edgedet.quiet import toolchain_output
with toolchain_output(False):
    for line in (
        b"2026-12-04 23:36:12.842054: E external/local_xla/xla/stream_executor/cuda/cuda_platform.cc:51] failed call to cuInit: X\n",
        b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
        b"W0000 00:00:1796428877.490202    2458 tf_tfl_flatbuffer_helpers.cc:364] Ignored output_format.\n",
        b"I0000 00:00:1796428877.504497    2458 mlir_graph_optimization_pass.cc:437] MLIR V1 optimization\n",
        b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n",
        b"WARNING:absl:Found untraced functions\n",
        b"Additional GRPC error information from remote target /job:worker/replica:0/task:0 while calling /tensorflow.CoordinationService/RegisterTask:\n",
        b':UNKNOWN:Error received from peer  {grpc_message:"Deadline Exceeded", grpc_status:4, created_time:"2026-12-05T11:03:19.52224351+00:00"}\n',
        b':{"created":"@1733396599.522","description":"Error received from peer ipv4:127.0.0.1:1","grpc_status":4}\n',
        b"[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55d4c1a2b340] moov atom not found\n",
        b"fully_quantize: 0, inference_type: 6, input_inference_type: UINT8, output_inference_type: UINT8\n",
        b"INFO:nncf:Validation of initial model was started\n",
        b"[ WARN:0@0.006] global cap_v4l.cpp:914 open VIDEOIO(V4L2:/dev/video0): can't open camera by index\n",
        b"edgedet: warning: kept\n",
        b"\reval:  50%|#####     | 4/8",
    ):
        os.write(2, line)
    time.sleep(0.3)
    os.write(2, b"\n2026 is not a log line\n")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       env={k: v for k, v in os.environ.items() if k != "EDGEDET_VERBOSE"})
    assert r.returncode == 0
    assert r.stderr == b"edgedet: warning: kept\n\reval:  50%|#####     | 4/8\n2026 is not a log line\n", r.stderr


def test_stale_temporaries_of_dead_processes_are_swept(tmp_path):
    import subprocess
    import sys

    from edgedet.files import sweep_stale_temps, temp_name

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # exited: its pid is free (or reused by a live process, then kept)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        left = tmp_path / f".state.tmp{dead_pid}.npz"
        left.write_bytes(b"half")
        work = tmp_path / f".validate.tmp{dead_pid}.k2x9"  # a killed validate's work folder
        (work / "m0").mkdir(parents=True)
        busy = tmp_path / f".best.weights.tmp{live.pid}.h5"
        busy.write_bytes(b"being written")
        mine = temp_name(tmp_path / "run.json")
        mine.write_text("{}")
        (tmp_path / "state.npz").write_bytes(b"kept")
        gone = sweep_stale_temps(tmp_path)
    finally:
        live.kill()
    survivors = sorted(p.name for p in tmp_path.iterdir())
    assert busy.name in survivors and mine.name in survivors and "state.npz" in survivors
    assert (left.name not in survivors) == (left in gone)
    assert (work.name not in survivors) == (work in gone)


def test_an_argument_error_is_one_line(capsys):
    from edgedet.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["train", "--strategy", "foo"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("edgedet train: error: argument --strategy: invalid choice: 'foo'") and "--help" in err
