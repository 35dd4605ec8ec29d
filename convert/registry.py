"""The one registry of export targets.

Everything the ``convert`` command knows about a target lives in its :class:`Target` entry:
the CLI's ``--target`` choices and help text, validation ("did you mean"), what input the
target needs (calibration data or a QAT checkpoint), which toolchain it imports (checked
before any work starts, so a missing ``openvino`` is a one-line error naming the pip
package) and the artifact's name ``<stem>_<target>.<ext>`` (OpenVINO: a folder).

Import-light on purpose: the export functions are referenced by ``"module:function"``
strings and imported only when a target actually runs.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass, field
from typing import Callable

from edgedet.errors import ConfigError, ToolchainError, did_you_mean

@dataclass(frozen=True)
class Target:
    """One export target.

    Attributes:
        name: the ``--target`` value, e.g. ``tflite-int8``.
        help: one line for ``edgedet convert --help``.
        ext: file suffix including the dot (``.tflite``, ``.onnx``); ``""`` for a folder.
        family: ``tflite`` | ``onnx`` | ``openvino`` (which metadata writer applies).
        needs: ``None``; ``"calib|qat"``: a QAT checkpoint, else ``--calib-data`` (PTQ).
        requires: modules the export imports; checked before anything runs.
        func: ``"module:function"`` implementing the export (see :mod:`edgedet.convert.api`).
        options: fixed arguments for ``func`` (e.g. the TFLite mode).
    """

    name: str
    help: str
    ext: str
    family: str
    func: str
    needs: str | None = None
    requires: tuple[str, ...] = ()
    options: dict = field(default_factory=dict)

    @property
    def is_folder(self) -> bool:
        return self.ext == ""

    @property
    def quantized_int8(self) -> bool:
        return self.needs == "calib|qat"

    def filename(self, stem: str) -> str:
        """``<stem>_<target><ext>``; an OpenVINO model is a folder of that name."""
        return f"{stem}_{self.name}{self.ext}"

    def output_path(self, out_dir: str, stem: str) -> str:
        return os.path.join(out_dir, self.filename(stem))

    def missing_toolchain(self) -> list[str]:
        """Modules in :attr:`requires` that cannot be imported (checked without importing)."""
        return [m for m in self.requires if importlib.util.find_spec(m) is None]

    def check_toolchain(self) -> None:
        """Raise a one-line :class:`ToolchainError` naming what to pip install."""
        missing = self.missing_toolchain()
        if missing:
            from edgedet.extras import OPTIONAL_MODULES

            # the extras that bring them (pyproject's pins, one source of truth), in a pasteable line
            extras = sorted({OPTIONAL_MODULES[m][1] for m in missing if m in OPTIONAL_MODULES})
            others = [m for m in missing if m not in OPTIONAL_MODULES]
            how = " ".join(([f'"edgedet[{",".join(extras)}]"'] if extras else []) + others)
            raise ToolchainError(f"target {self.name} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                                 f"not installed: pip install {how}")

    def load(self) -> Callable:
        mod, fn = self.func.split(":")
        return getattr(importlib.import_module(mod), fn)


_TF = ("tensorflow", "tf_keras")
_TFL = "edgedet.convert.tflite_export:export_tflite"
_ONNX = "edgedet.convert.onnx_export:export_onnx"
_OV = "edgedet.convert.openvino_export:export_openvino"

TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("tflite-fp32", "TFLite float32 (XNNPACK on CPU)", ".tflite", "tflite", _TFL, requires=_TF, options={"mode": "fp32"}),
        Target("tflite-fp16", "TFLite with float16 weights (GPU delegate, half the size)", ".tflite", "tflite", _TFL, requires=_TF, options={"mode": "fp16"}),
        Target("tflite-dynamic", "TFLite dynamic-range: int8 weights, float activations", ".tflite", "tflite", _TFL, requires=_TF, options={"mode": "dynamic"}),
        Target(
            "tflite-int8",
            "TFLite full-integer, uint8 I/O (--io int8 for int8): from a QAT run, else PTQ with --calib-data",
            ".tflite", "tflite", _TFL, needs="calib|qat", requires=_TF, options={"mode": "int8"},
        ),
        Target(
            "edgetpu",
            "full-integer TFLite + Edge TPU compatibility check (runs edgetpu_compiler when on PATH)",
            ".tflite", "tflite", "edgedet.convert.edgetpu:export_edgetpu", needs="calib|qat", requires=_TF, options={"mode": "int8"},
        ),
        Target("onnx", "ONNX float32 via tf2onnx (opset 13+)", ".onnx", "onnx", _ONNX, requires=(*_TF, "tf2onnx", "onnx"), options={"mode": "fp32"}),
        Target(
            "onnx-int8",
            "ONNX QDQ int8: from a QAT run, else onnxruntime static quantization with --calib-data",
            ".onnx", "onnx", _ONNX, needs="calib|qat", requires=(*_TF, "tf2onnx", "onnx", "onnxruntime"), options={"mode": "int8"},
        ),
        Target("openvino-fp32", "OpenVINO IR float32 (folder)", "", "openvino", _OV, requires=(*_TF, "tf2onnx", "onnx", "openvino"), options={"mode": "fp32"}),
        Target("openvino-fp16", "OpenVINO IR with float16-compressed weights (folder)", "", "openvino", _OV, requires=(*_TF, "tf2onnx", "onnx", "openvino"), options={"mode": "fp16"}),
        Target(
            "openvino-int8",
            "OpenVINO IR int8 (folder): from the QDQ ONNX of a QAT run, else NNCF PTQ with --calib-data",
            "", "openvino", _OV, needs="calib|qat", requires=(*_TF, "tf2onnx", "onnx", "openvino", "nncf"), options={"mode": "int8"},
        ),
    )
}


def target_names() -> list[str]:
    return list(TARGETS)


def get_target(name: str) -> Target:
    """Look a target up by name.

    Raises:
        ConfigError: unknown name, with the closest match and the full list.
    """
    t = TARGETS.get(name)
    if t is None:
        raise ConfigError(f"--target: unknown target {name!r}{did_you_mean(name, TARGETS)}; choose from {', '.join(TARGETS)}")
    return t


def help_text() -> str:
    """The targets table for ``edgedet convert --help``."""
    width = max(len(n) for n in TARGETS)
    lines = ["targets:"]
    for t in TARGETS.values():
        lines.append(f"  {t.name:<{width}}  {t.help}")
    return "\n".join(lines)


def resolve_targets(names: list[str]) -> list[Target]:
    """Validate names (unique, known) and return the targets in the order given."""
    seen, out = set(), []
    for n in names:
        t = get_target(n)
        if t.name not in seen:
            seen.add(t.name)
            out.append(t)
    return out
