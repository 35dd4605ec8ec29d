"""The on-device runtime (runtime/ outside runtime/report/) imports no other stage and no TensorFlow.

Walks every import statement of every on-device module, lazy ones inside functions included, so a
Raspberry Pi with numpy and a TFLite interpreter can run all of it.
"""
from __future__ import annotations

import ast
from pathlib import Path

RUNTIME = Path(__file__).resolve().parents[2] / "runtime"
FORBIDDEN_STAGES = ("edgedet.train", "edgedet.convert", "edgedet.quantize", "edgedet.model", "edgedet.pipeline",
                    "edgedet.runtime.report")
FORBIDDEN_TOOLCHAINS = ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization", "tf2onnx", "onnx2tf",
                        "torch", "matplotlib", "pycocotools")


def _on_device_modules() -> list[Path]:
    return sorted(p for p in RUNTIME.rglob("*.py") if "report" not in p.relative_to(RUNTIME).parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


def _hits(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_on_device_modules_import_no_other_stage():
    modules = _on_device_modules()
    assert len(modules) >= 15 and not any("validate" in p.name for p in modules)
    bad = []
    for path in modules:
        rel = path.relative_to(RUNTIME).as_posix()
        for line, name in _imports(path):
            if _hits(name, FORBIDDEN_STAGES):
                bad.append(f"runtime/{rel}:{line} imports {name}")
            elif _hits(name, FORBIDDEN_TOOLCHAINS):
                bad.append(f"runtime/{rel}:{line} imports {name}")
    assert not bad, "\n".join(bad)


def test_the_walker_sees_lazy_imports(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("def f():\n    from edgedet.train.check import load_checked\n    import tensorflow as tf\n")
    names = [n for _, n in _imports(p)]
    assert "edgedet.train.check" in names and "tensorflow" in names
