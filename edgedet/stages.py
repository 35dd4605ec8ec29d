"""The pipeline's stage bookkeeping: what a stage depends on (its input hash, with the run
folder's own path left out), its ``manifest.json``, setting aside a train/QAT run made with other
inputs, resuming one cut off, and running a stage's command in a child process.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from edgedet.files import atomic_write_text, discard, install, temp_name


@dataclass
class Stage:
    name: str
    folder: Path
    inputs: dict
    commands: list[list[str]]
    outputs: list[str] = field(default_factory=list)

    @property
    def input_hash(self) -> str:
        """What the stage's result depends on, with the run folder's own path left out: the same
        run moved or renamed is still up to date."""
        text = json.dumps(self.inputs, sort_keys=True).replace(str(self.folder.parent) + "/", "RUN/")
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def manifest_path(self) -> Path:
        return self.folder / "manifest.json"

    def matches(self, manifest: dict) -> bool:
        """The manifest was written for these inputs: the same hash, or (a run folder made before
        paths were absolute) the same inputs with each path spelt relative to where it ran."""
        return manifest.get("input_hash") == self.input_hash or _same(manifest.get("inputs"), self.inputs)

    def is_done(self) -> bool:
        try:
            m = json.loads(self.manifest_path.read_text())
        except (OSError, ValueError):
            return False
        return m.get("status") == "done" and self.matches(m)

    def write_manifest(self, seconds: float, status: str = "done") -> None:
        m = {
            "stage": self.name,
            "status": status,
            "inputs": self.inputs,
            "input_hash": self.input_hash,
            # keyed by the path inside the run, so the next stage's inputs survive a moved run folder
            "outputs": {_in_run(o, self.folder.parent): file_hash(o) for o in self.outputs} if status == "done" else {},
            "seconds": round(seconds, 1),
            "commands": [shlex.join(c) for c in self.commands],
        }
        atomic_write_text(self.manifest_path, json.dumps(m, indent=1))


def _same(old, new) -> bool:
    """Equal, where a path may be spelt relative in one and absolute (or relative to the run) in
    the other: ``runs/k/2_train`` and ``/home/me/runs/k/2_train`` are one folder."""
    if isinstance(old, dict) and isinstance(new, dict):
        if len(old) != len(new):
            return False
        return all(any(_same_text(ko, kn) and _same(vo, vn) for ko, vo in old.items()) for kn, vn in new.items())
    if isinstance(old, list) and isinstance(new, list):
        return len(old) == len(new) and all(_same(a, b) for a, b in zip(old, new))
    if isinstance(old, str) and isinstance(new, str):
        return _same_text(old, new)
    return old == new


def _same_text(a: str, b: str) -> bool:
    if a == b:
        return True
    longer, shorter = (a, b) if len(a) > len(b) else (b, a)
    return "/" in shorter and not shorter.startswith("/") and longer.endswith("/" + shorter)


def _in_run(path: str, run: Path) -> str:
    """``path`` relative to the run folder when it lies inside it (else as it is)."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(run))
    return path if rel.startswith("..") else rel


def file_hash(path: str | Path) -> str:
    """sha256 (16 hex) of a file, or of a folder's files (names + contents)."""
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
    for f in files:
        if f.name == "manifest.json" or ".tmp" in f.name:
            continue
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode())
        try:
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        except OSError:
            return "missing"
    return h.hexdigest()[:16]


def dataset_fingerprint(path: Path) -> str:
    """Hash of a dataset's annotation files plus its image names and sizes (not pixels: fast)."""
    h = hashlib.sha256()
    files = sorted(x for x in path.rglob("*") if x.is_file()) if path.is_dir() else [path]
    for f in files:
        rel = str(f.relative_to(path)) if path.is_dir() else f.name
        if f.suffix.lower() in {".json", ".xml", ".txt", ".yaml", ".yml"}:
            h.update(rel.encode() + f.read_bytes())
        else:
            h.update(f"{rel}:{f.stat().st_size}".encode())
    return h.hexdigest()[:16]


def chain_inputs(stages: list[Stage]) -> None:
    """Make each stage's inputs include the previous stage's outputs, so a changed upstream
    result (not just a changed command) re-runs everything after it."""
    prev = None
    for s in stages:
        if prev is not None and prev.manifest_path.exists():
            try:
                s.inputs["upstream"] = json.loads(prev.manifest_path.read_text()).get("outputs", {})
            except ValueError:
                pass
        prev = s


def run_child(cmd: list[str], log: Path) -> int:
    """Run a stage command, streaming its output to the terminal and a log file.

    A last element ``">PATH"`` sends the child's stdout to PATH (atomically) instead.
    """
    stdout_to = None
    if cmd and cmd[-1].startswith(">"):
        cmd, stdout_to = cmd[:-1], Path(cmd[-1][1:])
    from edgedet.runs import IN_PIPELINE_ENV

    # TF_CPP_MIN_LOG_LEVEL and EDGEDET_VERBOSE come from the CLI's --verbose choice (edgedet.quiet)
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", PYTHONUNBUFFERED="1", **{IN_PIPELINE_ENV: "1"})
    kwargs = {}
    if sys.platform.startswith("linux"):
        kwargs["preexec_fn"] = die_with_parent
    with open(log, "a") as lf:
        lf.write(f"$ {shlex.join(cmd)}\n")
        lf.flush()
        if stdout_to is not None:
            tmp = temp_name(stdout_to)
            try:
                with open(tmp, "w") as fo:
                    rc = subprocess.run(cmd, stdout=fo, stderr=subprocess.PIPE, env=env, text=True, **kwargs)
                lf.write(rc.stderr)
                sys.stderr.write(rc.stderr)
                errs = [ln for ln in rc.stderr.splitlines() if ln.startswith("edgedet: error:")]
                run_child.last_error = errs[-1] if errs else ""  # type: ignore[attr-defined]
                if rc.returncode == 0:
                    install(tmp, stdout_to)
            finally:
                discard(tmp)
            return rc.returncode
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, **kwargs)
        assert proc.stdout is not None
        last_err = ""
        for raw in iter(lambda: proc.stdout.read1(4096), b""):  # type: ignore[union-attr]
            text = raw.decode("utf-8", "replace")
            sys.stdout.write(text)
            sys.stdout.flush()
            lf.write(text)
            for line in text.splitlines():
                if line.startswith("edgedet: error:"):
                    last_err = line
        rc = proc.wait()
    run_child.last_error = last_err  # type: ignore[attr-defined]
    return rc


def die_with_parent() -> None:  # pragma: no cover - runs in the child
    """``preexec_fn`` of a child that must not outlive its parent (Linux): if the parent is killed,
    even with SIGKILL, the child is too; otherwise a re-run would race an orphaned trainer
    writing the same checkpoints, or a validate worker writing into a swept folder."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def set_aside_if_changed(stage: Stage) -> None:
    """A train/QAT folder holding a run made with other inputs (options, data, upstream weights)
    is moved to ``FOLDER.previous`` so the stage starts afresh instead of resuming it."""
    if stage.name not in ("train", "qat") or not (stage.folder / "run.json").exists():
        return
    try:
        manifest = json.loads(stage.manifest_path.read_text())
    except (OSError, ValueError):
        return  # interrupted before any manifest was written: resume it
    if stage.matches(manifest):
        return
    aside = stage.folder.with_name(stage.folder.name + ".previous")
    discard(aside)
    stage.folder.rename(aside)
    print(f"[{stage.name}] {_what_changed(manifest.get('inputs') or {}, stage.inputs)} since {stage.folder} was made; "
          f"it is kept as {aside} and the stage starts afresh", flush=True)


def _what_changed(old: dict, new: dict) -> str:
    """``"--epochs and --image-size changed"``: the options whose values differ, else what did."""
    def options(cmd) -> dict:
        cmd = list(cmd or [])
        return {a: (cmd[i + 1] if i + 1 < len(cmd) and not str(cmd[i + 1]).startswith("--") else True)
                for i, a in enumerate(cmd) if str(a).startswith("--")}

    a, b = options(old.get("cmd")), options(new.get("cmd"))
    flags = sorted(k for k in set(a) | set(b) if not _same(a.get(k), b.get(k)) and k != "--out")
    if flags:
        return f"{' and '.join(flags)} changed"
    if old.get("upstream") != new.get("upstream") or old.get("data") != new.get("data") or old.get("train") != new.get("train"):
        return "the previous stage's result changed"
    return "the options or inputs changed"


def with_resume(stage: Stage, cmd: list[str]) -> list[str]:
    """Train/QAT stages continue from their own checkpoint when a previous run was cut off.

    A stage folder with a run.json but no finished manifest is an interrupted run: the
    sub-command's own ``--resume RUN`` continues it with its optimizer/EMA state and epoch.
    """
    if stage.name in ("train", "qat") and (stage.folder / "run.json").exists():
        sub = cmd[3:5] if stage.name == "qat" else cmd[3:4]  # "train" | "quantize qat"
        return [*cmd[:3], *sub, "--resume", str(stage.folder)]
    return cmd
