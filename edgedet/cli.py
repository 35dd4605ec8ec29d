"""The `edgedet` command line.

Each stage owns its sub-commands in ``edgedet.<stage>.cli`` with a ``register(subparsers)``
function. Those modules must import nothing heavy at module level (TensorFlow, OpenVINO,
onnx2tf load inside the command handlers), so `edgedet --help` and `edgedet detect` stay fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from edgedet import __version__
from edgedet.errors import EdgedetError

# Order here is the order in `edgedet --help`.
STAGE_CLIS = (
    "edgedet.model.cli",
    "edgedet.train.data_cli",
    "edgedet.train.cli",
    "edgedet.quantize.cli",
    "edgedet.convert.cli",
    "edgedet.runtime.cli",
    "edgedet.runtime.report.cli",
    "edgedet.devices.cli",
    "edgedet.pipeline",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgedet",
        description="EfficientDet from training to the device: train, quantize, convert, run, validate.",
    )
    parser.add_argument("--version", action="version", version=f"edgedet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in STAGE_CLIS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a stage not built yet / not installed
            if exc.name and exc.name.startswith("edgedet"):
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except EdgedetError as exc:
        print(f"edgedet: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ModuleNotFoundError as exc:
        if not exc.name or exc.name.split(".")[0] == "edgedet":
            raise  # a packaging bug, not a missing optional dependency
        from edgedet.extras import missing_module_message

        print(f"edgedet: error: {missing_module_message(exc.name, f'edgedet {args.command}')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgedet: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)
