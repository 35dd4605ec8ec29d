"""Where a benchmark ran: CPU model, core count, OS, and whether the clock was throttled.

Everything here reads files or runs a tiny command and never raises: a field the OS does not
report is None.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path


def cpu_model() -> str | None:
    """CPU model from /proc/cpuinfo (x86 "model name", Arm "Model"/"Hardware"), else platform."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
        if fields.get(key):
            return fields[key]
    return platform.processor() or platform.machine() or None


# CPU features that decide which XNNPACK kernels run (int8 dot-product and wider vector paths);
# the same int8 file can round differently on CPUs that differ here.
KERNEL_FEATURES = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8",
                   "asimd", "asimddp", "i8mm", "asimdhp", "bf16", "sve", "sve2")


# Linux aarch64 hardware capability bits: (auxv key, bit). AT_HWCAP = 16, AT_HWCAP2 = 26.
_ARM_HWCAPS = {"asimd": (16, 1), "asimdhp": (16, 10), "asimddp": (16, 20), "sve": (16, 22),
               "sve2": (26, 1), "i8mm": (26, 13), "bf16": (26, 14)}


def _cpuinfo_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return set()
    have: set[str] = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            have.update(value.split())
    return have


def _arm_auxv_flags() -> set[str] | None:
    """Arm features from this process's auxiliary vector (what XNNPACK itself asks), or None.

    Read on aarch64 only; under qemu-user it is the emulated CPU's, while /proc/cpuinfo is the host's.
    """
    import struct

    try:
        data = Path("/proc/self/auxv").read_bytes()
    except OSError:
        return None
    pairs = dict(struct.iter_unpack("<QQ", data[: len(data) // 16 * 16]))
    if 16 not in pairs:
        return None
    return {name for name, (key, bit) in _ARM_HWCAPS.items() if pairs.get(key, 0) >> bit & 1}


def cpu_features(machine: str | None = None) -> list[str]:
    """The :data:`KERNEL_FEATURES` this process's CPU offers: on aarch64 from the auxiliary
    vector, else from /proc/cpuinfo (``flags`` on x86, ``Features`` on Arm)."""
    machine = machine or platform.machine()
    have = _arm_auxv_flags() if machine == "aarch64" else None
    if have is None:
        have = _cpuinfo_flags()
    return [f for f in KERNEL_FEATURES if f in have]


def emulation(machine: str) -> str | None:
    """``"qemu-user"`` when an Arm Python runs on an x86 CPU (user-mode emulation), else None.

    Under qemu-user the CPU model and every timing say nothing about a real Arm board (the kernel
    features come from the emulated CPU).
    """
    arm = machine.startswith(("aarch64", "arm"))
    # The host's x86 /proc/cpuinfo shows through, or an Arm view that says it is qemu's.
    x86 = any(f.startswith(("avx", "sse")) for f in _cpuinfo_flags())
    return "qemu-user" if arm and (x86 or "qemu" in (cpu_model() or "").lower()) else None


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def throttling() -> tuple[bool | None, str | None]:
    """Whether the CPU clock was throttled, where the OS says so.

    Sources, first that answers wins:
      * Raspberry Pi ``vcgencmd get_throttled``: any of the "has occurred" or "currently" bits
        for under-voltage, frequency capping, throttling or soft temperature limit.
      * Linux cpufreq: the policy cap ``scaling_max_freq`` below ``cpuinfo_max_freq``, or an
        x86 ``thermal_throttle`` counter above zero.

    Returns:
        ``(flag, detail)``; ``(None, None)`` when nothing reports it (VMs, containers).
    """
    if shutil.which("vcgencmd"):
        try:
            out = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=2).stdout
            value = int(out.strip().split("=")[-1], 16)
            return bool(value & 0xF000F), f"vcgencmd get_throttled={hex(value)}"
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
    counts = []
    for name in ("core_throttle_count", "package_throttle_count"):
        v = _read(f"/sys/devices/system/cpu/cpu0/thermal_throttle/{name}")
        if v is not None and v.isdigit():
            counts.append((name, int(v)))
    cur = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    cap = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq")
    mx = _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if cap and mx and cap.isdigit() and mx.isdigit() and int(mx) > 0:
        # An idle core clocks down by design, so the current frequency alone proves nothing;
        # a policy cap below the hardware maximum (thermal or power capping) does.
        detail = f"cpu0 cap {int(cap) // 1000} MHz of {int(mx) // 1000} MHz max"
        if cur and cur.isdigit():
            detail += f", now {int(cur) // 1000} MHz"
        if counts:
            detail += ", " + ", ".join(f"{k}={v}" for k, v in counts)
        return int(cap) < int(mx) or any(v > 0 for _, v in counts), detail
    if counts:
        return any(v > 0 for _, v in counts), ", ".join(f"{k}={v}" for k, v in counts)
    return None, None


def host_info() -> dict:
    """Host description for ``report.json``'s ``host`` section."""
    throttled, detail = throttling()
    machine = platform.machine()
    import numpy

    return {
        "cpu_model": cpu_model(),
        "num_cpus": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": machine,
        "cpu_features": cpu_features(machine),
        "emulation": emulation(machine),
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "throttled": throttled,
        "throttle_detail": detail,
    }
