"""Which pip extra brings each optional module, so a missing one becomes a one-line error.

``pip install "edgedet[runtime]"`` is the lightest install (detect, camera frames from images,
bench); ``edgedet[device]`` adds what ``validate`` needs on the device itself; ``train`` and
``convert`` bring the heavy toolchains. The extras are defined in ``pyproject.toml``; a test
checks that every entry here names a package its extra really lists.
"""
from __future__ import annotations

import importlib.util

from edgedet.errors import ToolchainError

# import name -> (pip distribution, extra that installs it)
OPTIONAL_MODULES: dict[str, tuple[str, str]] = {
    "ai_edge_litert": ("ai-edge-litert", "runtime"),
    "PIL": ("Pillow", "runtime"),
    "pycocotools": ("pycocotools", "device"),
    "matplotlib": ("matplotlib", "device"),
    "yaml": ("pyyaml", "device"),
    "tensorflow": ("tensorflow", "train"),
    "tf_keras": ("tf-keras", "train"),
    "tensorflow_model_optimization": ("tensorflow-model-optimization", "train"),
    "cv2": ("opencv-python-headless", "camera"),
    "tqdm": ("tqdm", "train"),
    "onnx": ("onnx", "convert"),
    "onnxruntime": ("onnxruntime", "convert"),
    "openvino": ("openvino", "convert"),
    "tf2onnx": ("tf2onnx", "convert"),
    "nncf": ("nncf", "convert"),
    "onnx2tf": ("onnx2tf", "convert"),
}


def install_hint(module: str) -> str:
    """``pip install "edgedet[EXTRA]"`` for a known optional module, else ``pip install NAME``."""
    top = module.split(".")[0]
    if top in OPTIONAL_MODULES:
        dist, extra = OPTIONAL_MODULES[top]
        return f'pip install "edgedet[{extra}]" (brings {dist})'
    return f"pip install {top}"


def missing_module_message(module: str, what: str | None = None) -> str:
    """One line: what needs ``module``, that it is not installed, and what to install."""
    top = module.split(".")[0]
    who = f"{what} needs" if what else "this command needs"
    return f"{who} the Python module {top!r}, which is not installed: {install_hint(top)}"


def has_modules(*modules: str) -> bool:
    """True when every one of ``modules`` can be imported (looked up, not imported)."""
    for name in modules:
        try:
            if importlib.util.find_spec(name) is None:
                return False
        except (ImportError, ValueError):
            return False
    return True


def require(*modules: str, what: str, alternative: str = "") -> None:
    """Raise :class:`ToolchainError` naming the extra when any of ``modules`` cannot be imported.

    Checked before long work starts (``edgedet validate`` runs every model before it evaluates
    and plots), so a missing evaluator fails in a second instead of after the last model.
    """
    for name in modules:
        if not has_modules(name):
            raise ToolchainError(missing_module_message(name, what) + (f"; or {alternative}" if alternative else ""))
