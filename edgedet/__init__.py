"""edgedet: EfficientDet from training to the device.

The stage folders (model/, train/, quantize/, convert/, runtime/, devices/) sit at the top
of the repository and pyproject maps them into ``edgedet.<stage>``. Nothing heavy is
imported here: ``import edgedet.runtime`` must stay TensorFlow-free.
"""
from __future__ import annotations

import os as _os

__version__ = "0.1.0"

# Running from a source checkout without installing (e.g. `python -m edgedet` in the repo
# root): let `edgedet.<stage>` resolve to the sibling stage folders. An installed package
# has its stages inside this directory already, so this only applies to a checkout.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_root, "pyproject.toml")) and _os.path.isdir(
    _os.path.join(_root, "runtime")
) and _root not in __path__:  # type: ignore[name-defined]
    __path__.append(_root)  # type: ignore[name-defined]
