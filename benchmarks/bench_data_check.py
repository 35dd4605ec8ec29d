"""`edgedet data check` on a 5,000-image synthetic dataset, every image decoded.

The dataset is written once in LabelImg's layout (VOC XML beside each JPEG, 640x480, 1-6
boxes each, a few broken on purpose) and then checked by the CLI in a child process, as a user
runs it. Reported: the wall time and the CPU time (user + sys) of the check; on a shared
machine the CPU time is the steadier figure.

    python benchmarks/bench_data_check.py                  # 5000 images, 640x480
    taskset -c 0,1 python benchmarks/bench_data_check.py   # pinned to two cores
"""
from __future__ import annotations

import argparse
import io
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ["car", "person", "bike"]


def _jpegs(n: int, size: tuple[int, int], seed: int) -> list[bytes]:
    """``n`` distinct photo-sized JPEGs (smooth background + shapes, so they compress like photos)."""
    rng = np.random.default_rng(seed)
    w, h = size
    out = []
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(n):
        c = rng.uniform(0, 255, (3, 3))
        arr = np.stack([(c[k, 0] + c[k, 1] * xx / w + c[k, 2] * yy / h) % 256 for k in range(3)], -1).astype(np.uint8)
        im = Image.fromarray(arr)
        d = ImageDraw.Draw(im)
        for _ in range(8):
            x, y = int(rng.integers(0, w - 60)), int(rng.integers(0, h - 60))
            d.rectangle([x, y, x + int(rng.integers(20, 200)), y + int(rng.integers(20, 200))],
                        fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def write_dataset(root: Path, num_images: int, size=(640, 480), seed: int = 0) -> None:
    """LabelImg layout: ``img_00000.jpg`` + ``img_00000.xml``; every 500th image truncated, every
    250th with a zero-size box, so the check has something to report."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    blobs = _jpegs(64, size, seed)
    w, h = size
    for i in range(num_images):
        stem = f"img_{i:05d}"
        data = blobs[i % len(blobs)]
        (root / f"{stem}.jpg").write_bytes(data[: len(data) // 2] if i % 500 == 499 else data)
        objs = []
        for k in range(int(rng.integers(1, 7))):
            x1, y1 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
            x2, y2 = min(w, x1 + int(rng.integers(8, 300))), min(h, y1 + int(rng.integers(8, 300)))
            if i % 250 == 17 and k == 0:
                x2, y2 = x1, y1
            objs.append(f"<object><name>{CLASSES[int(rng.integers(0, 3))]}</name><bndbox><xmin>{x1}</xmin>"
                        f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")
        (root / f"{stem}.xml").write_text(
            f"<annotation><folder>x</folder><filename>{stem}.jpg</filename><path>/home/u/x/{stem}.jpg</path>"
            f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>{''.join(objs)}</annotation>")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-images", type=int, default=5000)
    ap.add_argument("--dir", help="dataset folder to write (default: a temporary folder, removed after)")
    ap.add_argument("--repeat", type=int, default=2, help="runs of the check (the first warms the page cache)")
    args = ap.parse_args()
    tmp = None
    if args.dir:
        root = Path(args.dir)
    else:
        tmp = tempfile.TemporaryDirectory()
        root = Path(tmp.name) / "labelimg"
    if not (root / f"img_{args.num_images - 1:05d}.xml").exists():
        t = time.perf_counter()
        write_dataset(root, args.num_images)
        print(f"wrote {args.num_images} images to {root} in {time.perf_counter() - t:.1f} s")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, "-m", "edgedet", "data", "check", str(root)]
    for run in range(args.repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        summary = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr.strip()[-300:]
        print(f"run {run + 1}: exit {r.returncode}, wall {wall:.1f} s, cpu {cpu:.1f} s "
              f"({args.num_images / wall:.0f} images/s); {summary}")
    print(f"cores available: {len(os.sched_getaffinity(0))}, load average {os.getloadavg()[0]:.1f}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
