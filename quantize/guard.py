"""Ship the better int8 model: the QAT export or post-training int8 of the float parent.

A short QAT run can end below post-training quantization of the model it started from (the quick
preset's 20-step QAT lost 7.9 AP on a 200-image one-class set where PTQ gained 1.5), so the
pipeline makes both and keeps, per int8 target, the one with the higher COCO AP on the
validation split (never the test split the report uses). Ties go to QAT, whose ranges were
trained. ``edgedet quantize choose`` writes the winners under ``--out`` with ``choice.json``::

    {"kind": "edgedet-int8-choice", "version": 1, "data", "split", "images",
     "targets": {"lite0_tflite-int8.tflite": {"shipped": "qat"|"ptq", "why", "path", "AP": {"qat": .., "ptq": ..}}}}

keyed by the file name the two folders share.

AP values are in points (0..100).
"""
from __future__ import annotations

import os
import shutil
import sys

from edgedet.errors import ConfigError


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def model_ap(path: str, samples, class_names) -> float:
    """COCO AP in points of an exported model (file or OpenVINO folder) through the runtime Detector."""
    from edgedet.runtime.detector import Detector
    from edgedet.runtime.report.evaluate import EVAL_POSTPROCESS, coco_evaluate

    det = Detector.from_file(path, **EVAL_POSTPROCESS)
    return 100.0 * float(coco_evaluate(samples, [det.detect(s.image_path) for s in samples], class_names)["AP"])


def decide(ap_qat: float | None, ap_ptq: float | None, split: str = "val") -> tuple[str, str]:
    """``(shipped, why)`` from the two APs on ``split`` (points; None: that model failed)."""
    if ap_qat is None and ap_ptq is None:
        raise ConfigError("neither the QAT nor the PTQ int8 model could be evaluated")
    if ap_ptq is None:
        return "qat", "the PTQ model could not be evaluated"
    if ap_qat is None:
        return "ptq", "the QAT model could not be evaluated"
    d = next((d for d in range(2, 7) if round(ap_qat, d) != round(ap_ptq, d)), 6)  # digits that tell them apart
    where = {"val": "the validation split", "train": "the train split", "test": "the test split"}.get(split, split)
    if ap_qat >= ap_ptq:
        return "qat", f"QAT AP {ap_qat:.{d}f} >= PTQ {ap_ptq:.{d}f} on {where}"
    return "ptq", (f"QAT AP {ap_qat:.{d}f} < PTQ {ap_ptq:.{d}f} on {where} "
                   f"(QAT lost {ap_ptq - ap_qat:.{d}f} points)")


def _copy(src: str, dst: str) -> None:
    from edgedet.files import discard, install, temp_name

    tmp = temp_name(dst)
    try:
        if os.path.isdir(src):
            shutil.copytree(src, tmp)
        else:
            shutil.copyfile(src, tmp)
        install(tmp, dst)
    finally:
        discard(tmp)


def _check_kinds(qat_dir: str, ptq_dir: str, names: list[str]) -> None:
    """Each folder holds what its option says: QAT exports in --qat, post-training int8 in --ptq
    (swapped folders, or a float file named, would ship the wrong file under the right name)."""
    from edgedet.runtime.metadata import read_metadata

    want = {"qat": ("qat",), "ptq": ("ptq", "nncf-ptq")}
    for kind, folder in (("qat", qat_dir), ("ptq", ptq_dir)):
        for n in names:
            path = os.path.join(folder, n)
            meta = read_metadata(path) if os.path.exists(path) else None
            method = (meta.quantization or {}).get("method") if meta is not None else None
            if method is not None and method not in want[kind]:
                raise ConfigError(f"--{kind} {path}: its metadata says quantization {method!r}, not "
                                  f"{' or '.join(want[kind])} (are --qat and --ptq swapped, or is it not an int8 file?)")


def choose(qat_dir: str, ptq_dir: str, names: list[str], data: str, out: str, split: str = "val",
           log=_log) -> dict:
    """Evaluate ``qat_dir/NAME`` and ``ptq_dir/NAME`` for each name and copy the better to ``out/NAME``.

    Returns:
        The ``choice.json`` dict (module docstring).
    """
    from edgedet.errors import EdgedetError
    from edgedet.files import atomic_write_json
    from edgedet.quantize.diagnose import eval_samples

    from edgedet.runtime.metadata import read_metadata

    names = [n for n in names if n]
    if not names:
        raise ConfigError("--names: give the int8 file names to choose between")
    absent = [n for n in names if not any(os.path.exists(os.path.join(d, n)) for d in (qat_dir, ptq_dir))]
    if absent:
        raise ConfigError(f"--names {absent[0]}: in neither {qat_dir} nor {ptq_dir}")
    meta = next((m for m in (read_metadata(os.path.join(d, n)) for n in names for d in (qat_dir, ptq_dir)
                             if os.path.exists(os.path.join(d, n))) if m is not None), None)
    if meta is None:
        raise ConfigError(f"{qat_dir}, {ptq_dir}: none of {', '.join(names)} carries edgedet metadata")
    _check_kinds(qat_dir, ptq_dir, names)
    class_names = list(meta.labels)  # the models' class order fixes the evaluation's
    samples = eval_samples(data, split, None, class_names)
    if not samples:
        raise ConfigError(f"{data}: no '{split}' images to choose between QAT and PTQ on")
    os.makedirs(out, exist_ok=True)
    result = {"kind": "edgedet-int8-choice", "version": 1, "data": str(data), "split": split,
              "images": len(samples), "targets": {}}
    for name in names:
        aps = {}
        for kind, folder in (("qat", qat_dir), ("ptq", ptq_dir)):
            try:
                aps[kind] = round(model_ap(os.path.join(folder, name), samples, class_names), 4)
            except (EdgedetError, OSError, ValueError, RuntimeError) as exc:
                log(f"{name}: {kind} model not evaluated: {str(exc).splitlines()[0] if str(exc) else exc}")
                aps[kind] = None
        shipped, why = decide(aps["qat"], aps["ptq"], split)
        dst = os.path.join(out, name)
        _copy(os.path.join(qat_dir if shipped == "qat" else ptq_dir, name), dst)
        result["targets"][name] = {"shipped": shipped, "why": why, "path": dst, "AP": aps}
        log(f"{name}: shipping {shipped.upper()} ({why})")
    atomic_write_json(os.path.join(out, "choice.json"), result)
    return result
