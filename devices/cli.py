"""`edgedet devices [NAME] [--json]`: list device profiles (import-light)."""
from __future__ import annotations

import argparse
import json
import sys


def register(sub) -> None:
    p = sub.add_parser("devices", help="list device profiles (export targets, backend, thresholds)",
                       description="List the device profiles usable with --device everywhere.")
    p.add_argument("name", nargs="?", help="show one profile")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edgedet.devices import load_all, load_profile  # noqa: PLC0415

    broken: list[str] = []
    profiles = [load_profile(args.name)] if args.name else load_all(broken)
    for err in broken:
        print(f"edgedet: warning: {err}; left out", file=sys.stderr)
    if args.json:
        print(json.dumps([p.to_dict() for p in profiles], indent=1))
        return 0
    rows = [("name", "backend", "delegate", "device", "threads", "size", "max dAP", "budget ms", "targets")]
    for p in profiles:
        rows.append((p.name, p.backend, p.delegate, p.device, str(p.threads or "-"), str(p.input_size),
                     f"{p.max_map_drop:.3f}", "unmeasured" if p.latency_ms is None else f"{p.latency_ms:g}", ", ".join(p.targets)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    if args.name:
        p = profiles[0]
        print(f"\n{p.description}\nlatency budget: {p.latency_source or 'no source given'}"
              f"\n(file: {p.path}; setup notes: devices/README.md)")
    return 0
