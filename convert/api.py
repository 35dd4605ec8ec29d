"""``convert()``: run a list of registry targets on one source, atomically, with logging.

Every target function has the signature ``fn(ctx, target, tmp_path, meta)``: it writes the
complete artifact, metadata included, to ``tmp_path`` (a file, or a folder for OpenVINO) and
fills ``meta.quantization``. Only after it returns is ``tmp_path`` moved onto the final name,
so a failed or interrupted export never leaves a half-written model behind.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

from edgedet.convert.registry import Target, resolve_targets
from edgedet.errors import ConfigError, EdgedetError
from edgedet.files import discard, file_size, fmt_size, install

IO_CHOICES = ("uint8", "int8")


@dataclass
class Artifact:
    target: str
    path: str
    seconds: float
    size: int


@dataclass
class Context:
    """Shared state of one ``convert`` call (the source, calibration, caches, options)."""

    source: object
    calib_data: str | None = None
    calib_count: int = 300
    io_dtype: str = "uint8"
    nms: bool = False
    nms_options: dict = field(default_factory=lambda: {"max_detections": 100, "score_threshold": 0.05, "iou_threshold": 0.5,
                                                          "per_class": False})
    log: Callable[[str], None] = print
    work_dir: str = ""
    max_drop: float | None = None  # int8 AP budget in points (edgedet.quantize.budget)
    val_data: str | None = None
    val_split: str = "val"
    cache: dict = field(default_factory=dict)

    def calibration(self, layout: str = "NHWC"):
        """The :class:`edgedet.convert.calib.Calibration` for ``--calib-data`` (cached)."""
        key = ("calib", layout)
        if key not in self.cache:
            from edgedet.convert.calib import MIN_RECOMMENDED, Calibration

            m = self.source.meta
            t = time.perf_counter()
            cal = Calibration(self.calib_data, m.input_size, m.mean, m.std, count=self.calib_count, layout=layout)
            cal.canvases()
            self.log(f"{'calibration':<16} {time.perf_counter() - t:6.1f} s  {len(cal)} images from {self.calib_data} (sha256 {cal.sha256[:12]})")
            if len(cal) < MIN_RECOMMENDED:
                self.log(f"warning: only {len(cal)} calibration images; int8 ranges are more reliable with >= {MIN_RECOMMENDED}")
            self.cache[key] = cal
        return self.cache[key]

    def quant_source(self) -> str:
        """``qat`` when the source carries its own ranges, else ``ptq`` (needs ``--calib-data``)."""
        return "qat" if getattr(self.source, "is_qat", False) else "ptq"


def check_needs(targets: list[Target], source_kind: str | None, calib_data: str | None) -> None:
    """One-line error when an int8 target has neither a QAT source nor calibration data."""
    for t in targets:
        if source_kind == "qat" and t.needs != "calib|qat":
            raise ConfigError(
                f"--target {t.name}: a QAT run only exports int8 targets (tflite-int8, edgetpu, onnx-int8, openvino-int8); "
                f"convert its float run (run.json source_run) for float targets"
            )
        if t.needs == "calib|qat" and source_kind != "qat" and not calib_data:
            raise ConfigError(
                f"--target {t.name} needs a QAT run (--weights RUN_QAT from `edgedet quantize qat`) "
                f"or --calib-data PATH (dataset or image folder) for post-training quantization"
            )


def check_budget(targets: list[Target], weights: str | None, max_drop: float, val_data: str | None, nms: bool) -> None:
    """One-line errors for ``--max-drop`` options that cannot work (before any conversion starts)."""
    from edgedet.quantize.budget import refuse_integer_only

    refuse_integer_only([t.name for t in targets])
    if not math.isfinite(max_drop) or max_drop < 0:
        raise ConfigError(f"--max-drop must be a number of AP points >= 0, got {max_drop}")
    if not {"tflite-int8", "openvino-int8"} & {t.name for t in targets}:
        raise ConfigError("--max-drop applies to --target tflite-int8 and openvino-int8")
    if not val_data:
        raise ConfigError("--max-drop needs --val-data DATASET (its validation split measures the AP drop)")
    if nms:
        raise ConfigError("--max-drop measures the raw-output model; export --nms separately")
    if not weights:
        raise ConfigError("--max-drop needs a float run (--weights RUN) to keep layers in float")
    from edgedet.runs import read_run_json

    if read_run_json(weights).get("kind", "float") == "qat":
        raise ConfigError("--max-drop applies to post-training int8 of a float run; a QAT run has no float layers "
                          "to fall back to (give its float run, run.json source_run)")


def _remove_if_empty(out_dir: str, ours: bool) -> None:
    """Nothing was written into the --out folder this call made: leave no empty folder behind."""
    if ours and os.path.isdir(out_dir) and not os.listdir(out_dir):
        os.rmdir(out_dir)


def run_targets(ctx: Context, targets: list[Target], out_dir: str, stem: str) -> list[Artifact]:
    """Export each target in turn; failures are cleaned up and re-raised after the rest ran.

    Raises:
        EdgedetError: (the first failure's class) naming every target that failed.
    """
    created = not os.path.exists(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    done, failed = [], []
    for t in targets:
        final = t.output_path(out_dir, stem)
        name = os.path.basename(final)
        tmp = os.path.join(out_dir, f".{name}.tmp{os.getpid()}" + (t.ext or ""))
        if t.is_folder:
            os.makedirs(tmp, exist_ok=True)
        start = time.perf_counter()
        try:
            meta = ctx.source.meta_for(t.name)
            t.load()(ctx, t, tmp, meta)
            install(tmp, final)
        except BaseException as exc:  # noqa: BLE001 - clean up on anything, even Ctrl-C
            discard(tmp)
            if not isinstance(exc, Exception):
                _remove_if_empty(out_dir, created and not done)
                raise
            failed.append((t, exc))
            if len(targets) > 1:  # with one target, the error line below says it all
                msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                ctx.log(f"{t.name:<16} FAILED: {msg}")
            continue
        sec = time.perf_counter() - start
        art = Artifact(t.name, final, sec, file_size(final) or 0)
        done.append(art)
        ctx.log(f"{t.name:<16} {sec:6.1f} s  {fmt_size(art.size):>9}  {final}")
    if failed:
        _remove_if_empty(out_dir, created and not done)
        t, exc = failed[0]
        names = ", ".join(ft.name for ft, _ in failed)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        cls = type(exc) if isinstance(exc, EdgedetError) else EdgedetError
        err = cls(f"export failed for {names}: {first}")
        err.artifacts = done  # type: ignore[attr-defined]
        raise err from exc
    return done


def _unused_options(ts, nms, nms_score, io_dtype, max_drop, val_data, val_split, nms_per_class=False) -> list[str]:
    """Options given that none of these targets uses: said once each, never silently ignored."""
    notes = []
    if nms and any(t.family != "tflite" for t in ts):
        notes.append("--nms applies to TFLite targets only; ONNX/OpenVINO artifacts keep raw outputs")
    if nms_score is not None and not nms:
        notes.append("--nms-score applies only with --nms; it is not used")
    if nms_per_class and not nms:
        notes.append("--nms-per-class applies only with --nms; it is not used")
    full_integer = any(t.name in ("tflite-int8", "edgetpu") for t in ts)
    if io_dtype != "uint8" and not full_integer:
        notes.append(f"--io {io_dtype} applies to full-integer TFLite (tflite-int8, edgetpu); it is not used")
    elif io_dtype == "int8" and nms:
        notes.append("--io int8 --nms: MediaPipe and the TFLite Task Library take only uint8 or float input, "
                     "so they will not open this file (the edgedet runtime does); keep the default --io uint8 for them")
    if max_drop is None and (val_data or val_split != "val"):
        notes.append("--val-data and --val-split apply only with --max-drop; they are not used")
    return notes


def convert(targets: list[str], weights: str | None = None, from_onnx: str | None = None, calib_data: str | None = None,
            calib_count: int = 300, nms: bool = False, out_dir: str | None = None, io_dtype: str = "uint8",
            log: Callable[[str], None] = print, nms_score: float | None = None, max_drop: float | None = None,
            val_data: str | None = None, val_split: str = "val",
            nms_per_class: bool = False) -> tuple[list[Artifact], object]:
    """Convert a run (``weights``) or an ONNX file (``from_onnx``) to every target.

    ``nms_score``: the score threshold baked into a ``--nms`` model (default 0.05).
    ``nms_per_class``: the ``--nms`` op suppresses per class (:func:`edgedet.convert.nms.nms_signature`).
    ``max_drop``: tflite-int8 keeps the fewest layers in float that hold the AP drop on ``val_data``'s
    ``val_split`` within this many points (:mod:`edgedet.quantize.budget`).

    Returns:
        ``(artifacts, source)``.

    Raises:
        ConfigError: unknown target, missing calibration/QAT for int8, bad options.
        ToolchainError: a target's toolchain is not installed (names the pip package).
    """
    from edgedet.train.layouts import split_format

    if bool(weights) == bool(from_onnx):
        raise ConfigError("give exactly one of --weights RUN or --from model.onnx")
    if io_dtype not in IO_CHOICES:
        raise ConfigError(f"--io {io_dtype!r}: choose uint8 or int8")
    if not targets:
        raise ConfigError("no --target given (see `edgedet convert --help` for the list)")
    ts = resolve_targets(targets)
    for t in ts:
        t.check_toolchain()
    if max_drop is not None:
        check_budget(ts, weights, max_drop, val_data, nms)
    if from_onnx:
        check_needs(ts, "onnx", calib_data)
    elif weights:
        from edgedet.runs import read_run_json

        check_needs(ts, read_run_json(weights).get("kind", "float"), calib_data)
    if nms_score is not None and not 0.0 < nms_score < 1.0:
        raise ConfigError(f"--nms-score must be in (0, 1), got {nms_score}")
    if out_dir and os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ConfigError(f"--out {out_dir}: is a file; --out takes the folder the artifacts go into")
    if calib_data and not os.path.exists(split_format(calib_data)[1]):
        raise ConfigError(f"--calib-data {calib_data}: no such dataset, image folder or list")
    for note in _unused_options(ts, nms, nms_score, io_dtype, max_drop, val_data, val_split, nms_per_class):
        log(f"note: {note}")
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from edgedet.convert.source import load_onnx_source, load_run_source

    start = time.perf_counter()
    source = load_onnx_source(from_onnx) if from_onnx else load_run_source(weights)
    log(f"{'load ' + source.kind:<16} {time.perf_counter() - start:6.1f} s  {source.path}  ({source.meta.model or 'model'}, "
        f"{source.meta.input_size[0]}x{source.meta.input_size[1]}, {source.meta.num_classes} classes)")
    if out_dir is None:
        out_dir = os.path.join(weights, "export") if weights else os.path.dirname(os.path.abspath(from_onnx))
    with tempfile.TemporaryDirectory(prefix="edgedet-convert-") as work:
        ctx = Context(source=source, calib_data=calib_data, calib_count=calib_count, io_dtype=io_dtype, nms=nms, log=log, work_dir=work)
        ctx.max_drop, ctx.val_data, ctx.val_split = max_drop, val_data, val_split
        if nms_score is not None:
            ctx.nms_options["score_threshold"] = float(nms_score)
        ctx.nms_options["per_class"] = bool(nms_per_class)
        arts = run_targets(ctx, ts, out_dir, source.stem)
    return arts, source


def validate_command(arts: list[Artifact], source, device: str | None = None) -> str:
    """The ready-to-paste ``edgedet validate`` line for what was just written."""
    import shlex

    base = source.path if source.kind != "onnx" else None
    if source.kind == "qat":  # the float run it was fine-tuned from is the baseline; the twin comes by itself
        from edgedet.runs import read_run_json

        float_run = read_run_json(source.path).get("source_run")
        base = float_run if float_run and os.path.isdir(float_run) else None
    data = source.dataset or "DATASET"
    parts = ["edgedet", "validate"]
    if base:
        parts += ["--baseline", base]
    parts += ["--models", *[a.path for a in arts], "--data", data]
    if device:
        parts += ["--device", device]
    out = os.path.join(os.path.dirname(arts[0].path) if arts else ".", "report")
    parts += ["--out", out]
    return " ".join(shlex.quote(p) for p in parts)
