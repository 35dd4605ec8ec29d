"""Import time of the on-device runtime: `python -X importtime -c "import edgedet.runtime"`.

Prints the median wall time of a fresh interpreter importing ``edgedet.runtime`` (minus the bare
interpreter start-up) and the cumulative import time reported by ``-X importtime``.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time


def importtime_us(module: str = "edgedet.runtime") -> int:
    """Cumulative microseconds ``-X importtime`` reports for ``module``."""
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True, text=True, check=True)
    for line in r.stderr.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == module:
            return int(parts[1])
    raise RuntimeError(f"{module} not found in -X importtime output")


def wall_s(code: str, repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> dict:
    cumulative = statistics.median(importtime_us() for _ in range(7)) / 1e6
    bare = wall_s("pass")
    full = wall_s("import edgedet.runtime")
    heavy = subprocess.run([sys.executable, "-c", "import sys, edgedet.runtime; print(sorted(m for m in ('tensorflow','tf_keras','keras','openvino','onnxruntime','ai_edge_litert','PIL','cv2') if m in sys.modules))"],
                           capture_output=True, text=True, check=True).stdout.strip()
    print(f"import edgedet.runtime: -X importtime cumulative {cumulative * 1000:.0f} ms (median of 7); "
          f"wall {(full - bare) * 1000:.0f} ms over a bare interpreter ({bare * 1000:.0f} ms)")
    print(f"heavy modules loaded by the import: {heavy}")
    return {"importtime_s": cumulative, "wall_s": full - bare}


if __name__ == "__main__":
    main()
