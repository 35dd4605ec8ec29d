"""Device profiles: one TOML file per target device, validated against a small schema.

    from edgedet.devices import load_profile, list_profiles
    p = load_profile("raspberry-pi-5")
    p.targets, p.backend, p.delegate, p.device, p.threads, p.input_size
    p.max_map_drop, p.latency_ms          # acceptance thresholds for `edgedet validate`
    p.latency_source                      # where the budget comes from, or why there is none

Schema (every field is checked; an error names the file and the field)::

    name = "raspberry-pi-5"          # must equal the file stem
    description = "..."
    targets = ["tflite-int8", ...]   # export targets, preferred first (edgedet convert --target)
    backend = "litert"               # litert | onnxruntime | openvino
    delegate = "xnnpack"             # none | xnnpack | edgetpu | nnapi | gpu
    device = "cpu"                   # backend device string: cpu, usb:0, pci:0, nnapi, CPU, GPU, NPU, AUTO
    threads = 4                      # optional, CPU threads
    input_size = 320                 # preferred network input (multiple of 64 for Lite models' heads)
    arch = "aarch64"                 # optional: the device's CPU architecture (aarch64, x86_64, armv7l);
                                     # validate notes a report made on another one
    [thresholds]
    max_map_drop = 0.02              # absolute AP@[.5:.95] drop vs float (AP in [0, 1])
    latency_ms = 40.0                # p50 end-to-end budget; omit it when no figure is published
    latency_source = "..."           # the published figure the budget comes from, or
                                     # "unmeasured: ..." (then no latency_ms: validate checks none)

Extra profiles can be added with ``EDGEDET_DEVICES=/path/to/dir`` (searched first).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from edgedet.errors import ConfigError, did_you_mean

try:  # Python 3.11+
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - 3.10
    import tomli as _toml  # type: ignore[no-redef]

PROFILE_DIR = Path(__file__).resolve().parent
BACKENDS = ("litert", "onnxruntime", "openvino")
DELEGATES = ("none", "xnnpack", "edgetpu", "nnapi", "gpu")
TARGETS = (
    "tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8", "edgetpu",
    "onnx", "onnx-int8", "openvino-fp32", "openvino-fp16", "openvino-int8",
)
# Which backend runs each target's files.
ARCHES = ("aarch64", "x86_64", "armv7l")
# platform.machine() spellings of the same architectures
_MACHINE = {"arm64": "aarch64", "amd64": "x86_64", "x64": "x86_64", "armv7": "armv7l"}
TARGET_BACKEND = {t: ("litert" if t.startswith("tflite") or t == "edgetpu" else "onnxruntime" if t.startswith("onnx") else "openvino") for t in TARGETS}


def arch_of(machine: str) -> str:
    """``platform.machine()`` as one of :data:`ARCHES` where it is one of their spellings."""
    return _MACHINE.get(machine.lower(), machine.lower())


@dataclass(frozen=True)
class DeviceProfile:
    """A validated device profile (see module docstring for the fields)."""

    name: str
    description: str
    targets: tuple[str, ...]
    backend: str
    delegate: str
    device: str
    input_size: int
    max_map_drop: float
    latency_ms: float | None
    threads: int | None = None
    path: str = ""
    latency_source: str = ""
    arch: str = ""
    extra: dict = field(default_factory=dict)

    def other_host(self, machine: str) -> str | None:
        """A one-line note when ``machine`` (``platform.machine()``) is not this device's architecture."""
        host = arch_of(machine)
        if not self.arch or host == self.arch:
            return None
        return (f"profile {self.name} describes an {self.arch} device, and this host is {host}: accuracy and "
                f"latency are this host's, not the device's (validate on the device: docs/device-validation.md)")

    @property
    def target(self) -> str:
        """Preferred export target."""
        return self.targets[0]

    @property
    def backend_device(self) -> str:
        """Device string handed to the profile's own backend."""
        return self.device

    def device_for(self, backend: str) -> str:
        """Device string for a model file run by ``backend``.

        Raises:
            ConfigError: an accelerator profile asked to run another backend's file.
        """
        if backend == self.backend:
            return self.device
        if self.device.lower() == "cpu":
            return "CPU" if backend == "openvino" else "cpu"
        raise ConfigError(f"device profile {self.name!r} runs {self.backend} models on {self.device}; this file needs {backend}")

    def to_dict(self) -> dict:
        return {
            "name": self.name, "description": self.description, "targets": list(self.targets),
            "backend": self.backend, "delegate": self.delegate, "device": self.device, "threads": self.threads,
            "input_size": self.input_size, "arch": self.arch or None,
            "thresholds": {"max_map_drop": self.max_map_drop, "latency_ms": self.latency_ms,
                           "latency_source": self.latency_source},
            "path": self.path,
        }


def _dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("EDGEDET_DEVICES", "").split(os.pathsep) if p]
    return [*extra, PROFILE_DIR]


def _files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in _dirs():
        if d.is_dir():
            for f in sorted(d.glob("*.toml")):
                found.setdefault(f.stem, f)
    return found


def list_profiles() -> list[str]:
    """Names of all available profiles, sorted."""
    return sorted(_files())


_THRESHOLD_FIELDS = ("max_map_drop", "latency_ms", "latency_source")


def _need(d: dict, key: str, types, where: str, check=None, hint: str = ""):
    if key not in d:
        raise ConfigError(f"{where}: missing field '{key}'")
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, types):
        tn = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        raise ConfigError(f"{where}: field '{key}' must be {tn}, got {v!r}")
    if check is not None and not check(v):
        raise ConfigError(f"{where}: field '{key}' has invalid value {v!r}{hint}")
    return v


def parse_profile(path) -> DeviceProfile:
    """Read and validate one profile file.

    Raises:
        ConfigError: unreadable TOML or a bad field (message names the file and field).
    """
    path = Path(path)
    where = str(path)
    try:
        with open(path, "rb") as f:
            d = _toml.load(f)
    except (_toml.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: not valid TOML ({exc})") from exc
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read ({exc})") from exc
    known = {"name", "description", "targets", "backend", "delegate", "device", "threads", "input_size", "arch",
             "thresholds"}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown field '{unknown[0]}'{did_you_mean(unknown[0], known)}")
    name = _need(d, "name", str, where, lambda v: v == path.stem, f" (must equal the file name {path.stem!r})")
    desc = _need(d, "description", str, where)
    targets = _need(d, "targets", list, where, lambda v: len(v) > 0, " (list at least one export target)")
    for t in targets:
        if t not in TARGETS:
            raise ConfigError(f"{where}: field 'targets' has unknown target {t!r}{did_you_mean(str(t), TARGETS)}")
    backend = _need(d, "backend", str, where, lambda v: v in BACKENDS, f" (choose {', '.join(BACKENDS)}){did_you_mean(str(d.get('backend')), BACKENDS)}")
    delegate = _need(d, "delegate", str, where, lambda v: v in DELEGATES, f" (choose {', '.join(DELEGATES)})")
    if delegate in ("edgetpu", "nnapi", "xnnpack", "gpu") and backend != "litert":
        raise ConfigError(f"{where}: field 'delegate' {delegate!r} needs backend 'litert'")
    device = _need(d, "device", str, where, lambda v: bool(v.strip()))
    if delegate == "edgetpu" and "edgetpu" not in targets:
        raise ConfigError(f"{where}: field 'targets' lacks 'edgetpu', the only files the edgetpu delegate runs")
    if TARGET_BACKEND[targets[0]] != backend:
        raise ConfigError(f"{where}: field 'targets' starts with {targets[0]!r}, which backend {backend!r} does not run")
    # A CPU profile may list targets of other backends (each runs on that backend's CPU path);
    # an accelerator profile may not (its device string means nothing to another backend).
    bad = [t for t in targets if TARGET_BACKEND[t] != backend and device.lower() != "cpu"]
    if bad:
        raise ConfigError(f"{where}: field 'targets' lists {bad[0]!r}, which backend {backend!r} on {device} does not run")
    threads = d.get("threads")
    if threads is not None:
        threads = _need(d, "threads", int, where, lambda v: 1 <= v <= 256, " (1..256)")
    size = _need(d, "input_size", int, where, lambda v: 64 <= v <= 2048 and v % 64 == 0, " (a multiple of 64 in 64..2048)")
    arch = _need(d, "arch", str, where, lambda v: v in ARCHES, f" (choose {', '.join(ARCHES)})") if "arch" in d else ""
    th = _need(d, "thresholds", dict, where)
    tw = f"{where} [thresholds]"
    for k in th:
        if k not in _THRESHOLD_FIELDS:
            raise ConfigError(f"{tw}: unknown field '{k}'{did_you_mean(k, _THRESHOLD_FIELDS)}")
    drop = float(_need(th, "max_map_drop", (int, float), tw, lambda v: 0 <= v <= 1, " (absolute AP drop in 0..1)"))
    source = th.get("latency_source", "")
    if not isinstance(source, str):
        raise ConfigError(f"{tw}: field 'latency_source' must be str, got {source!r}")
    if "latency_ms" in th or not source.startswith("unmeasured"):
        # Missing is an error unless the source says the board is unmeasured (then no budget).
        lat = float(_need(th, "latency_ms", (int, float), tw, lambda v: 0 < v < float("inf"), " (a number of ms > 0)"))
    else:
        lat = None
    return DeviceProfile(name=name, description=desc, targets=tuple(targets), backend=backend, delegate=delegate,
                         device=device, threads=threads, input_size=size, max_map_drop=drop, latency_ms=lat, path=where,
                         latency_source=source, arch=arch)


def load_profile(name: str) -> DeviceProfile:
    """Load a profile by name (or a path to a ``.toml`` file).

    Raises:
        ConfigError: unknown name (with "did you mean"), no such file, or an invalid profile.
    """
    if name.endswith(".toml") or "/" in name or os.sep in name:
        if not os.path.isfile(name):
            raise ConfigError(f"{name}: no such device profile file" + ("" if name.endswith(".toml") else " (profiles are .toml files)"))
        return parse_profile(name)
    files = _files()
    if name not in files:
        raise ConfigError(f"unknown device profile {name!r}{did_you_mean(name, files)}; see `edgedet devices` ({', '.join(sorted(files))})")
    return parse_profile(files[name])


def load_all(errors: list[str] | None = None) -> list[DeviceProfile]:
    """Every profile, validated. With ``errors``, a broken profile's one-line error goes there and
    the others are still returned (one bad user file must not hide the built-in ones)."""
    out = []
    for n in list_profiles():
        try:
            out.append(load_profile(n))
        except ConfigError as exc:
            if errors is None:
                raise
            errors.append(str(exc))
    return out
