"""The `edgedet` command line.

Each stage owns its sub-commands in ``edgedet.<stage>.cli`` with a ``register(subparsers)``
function. Those modules must import nothing heavy at module level (TensorFlow, OpenVINO,
onnx2tf load inside the command handlers), so `edgedet --help` and `edgedet detect` stay fast.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from edgedet import __version__
from edgedet.errors import EdgedetError
from edgedet.quiet import is_verbose, toolchain_output

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


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors, like every other edgedet error (the usage block is --help's)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="edgedet",
        description="EfficientDet from training to the device: train, quantize, convert, run, validate.",
    )
    parser.add_argument("--version", action="version", version=f"edgedet {__version__}")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow/CUDA/LiteRT log lines (hidden otherwise); also after COMMAND")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in STAGE_CLIS:
        # Every stage ships in the one package, so a failing import is a broken install or a bug:
        # let its real error through rather than drop the sub-commands without a word.
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = is_verbose(argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    argv = [a for a in argv[:cut] if a != "--verbose"] + argv[cut:]  # accepted after the sub-command too
    with toolchain_output(verbose):  # before any stage imports TensorFlow
        return _run(argv)


def _run(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except EdgedetError as exc:
        if exc.exit_now:
            from edgedet.quiet import hard_exit

            hard_exit(exc.exit_code, f"edgedet: error: {exc}\n")
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
    except BrokenPipeError:
        # The reader went away (`edgedet detect ... | head`): stop quietly, as other tools do;
        # stdout goes to devnull so the interpreter's final flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:  # an output path that is a folder, a full disk, no permission
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"edgedet: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    return int(rc or 0)
