"""`edgedet pipeline`: dataset -> float model -> QAT -> device files -> validated report.

Each stage runs as its own `edgedet …` sub-command in a child process, in its own folder
under the run directory, and writes a ``manifest.json`` (inputs, their hash, outputs, time)
when it finishes (``"running"`` with the input hash while it runs). Re-running skips stages
whose manifest matches the current inputs; a stage without a finished manifest is run again, and
the train/QAT stages resume from their own checkpoints, so killing the pipeline and re-running
continues where it stopped. A train/QAT run made with other inputs is set aside, never resumed.

Child processes (rather than in-process calls) keep each stage's memory to itself (a 2-core
Raspberry-Pi-class CI box cannot hold TF training, OpenVINO and NNCF at once) and make a kill
mid-stage leave exactly what the stage itself had atomically written.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from edgedet.argtypes import positive
from edgedet.errors import ConfigError, DataError, EdgedetError, ToolchainError
from edgedet.files import sweep_stale_temps
from edgedet.stages import Stage, chain_inputs, dataset_fingerprint, run_child, set_aside_if_changed, with_resume

STAGES = ("data", "train", "qat", "convert", "validate")

# Schedules. "quick" is sized for the built-in synthetic data on 2 CPU cores (the README's
# first command); "full" is the real schedule for a user's dataset: fine-tuning an ImageNet
# backbone on a few hundred images (BCCD), stem + first 3 backbone stages frozen (their
# features transfer; freezing them also saves the costliest high-resolution backprop), mild
# scale jitter (0.1-2.0 shrinks small objects such as platelets out of reach), and a
# wall-clock budget that shortens the cosine schedule rather than cutting it off.
PRESETS = {
    # quick: the whole README job in ~15 min on 2 cores (6 min of it training). The whole
    # ImageNet backbone stays frozen: in a 6-minute budget the BiFPN and heads learn far more
    # per second without backprop through the backbone (5-minute synthetic benchmark: AP50 0.86
    # frozen at 128 px; stages 4-7 trained at 256 px: AP50 ~0.45 after 5 epochs).
    # Its one QAT epoch runs at the float LR / 100, not QAT's default / 10: on BCCD Lite0@256 (25 steps)
    # /10 moved the weights off the float optimum (float twin -1.23 AP, QAT int8 -1.70 vs PTQ -0.05);
    # /100 kept them (twin +0.41, QAT int8 -0.05). See docs/int8-budget.md.
    "quick": {"image_size": 256, "epochs": 12, "batch": 8, "qat_epochs": 1, "calib": 100, "time_limit": 6,
              "train_args": ["--lr", 0.08, "--freeze-backbone", "all", "--jitter", "0.5,1.5", "--eval-every", 4],
              "qat_args": ["--lr", 0.0008]},
    "full": {"image_size": None, "epochs": 80, "batch": 8, "qat_epochs": 5, "calib": 300, "time_limit": 85,
             "train_args": ["--lr", 0.04, "--freeze-backbone", 3, "--jitter", "0.75,1.25", "--eval-every", 5]},
}


def register(sub) -> None:
    p = sub.add_parser(
        "pipeline",
        help="data check -> train -> QAT -> convert -> validate, resumable",
        description="Run the whole job. Without --data it uses the built-in synthetic dataset.",
    )
    p.add_argument("--data", help="dataset (COCO json, VOC or YOLO folder); default: built-in synthetic set")
    p.add_argument("--model", default="lite0", help="model variant (default lite0; see `edgedet info`)")
    p.add_argument("--device", default="x86-cpu", help="device profile (see `edgedet devices`)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="quick (default for built-in data) or full")
    p.add_argument("--image-size", type=positive, help="override the preset's input size")
    p.add_argument("--epochs", type=positive, help="override the preset's training epochs")
    p.add_argument("--qat-epochs", type=positive, help="override the preset's QAT epochs")
    p.add_argument("--batch", type=positive, help="override the preset's batch size")
    p.add_argument("--time-limit", type=float, metavar="MIN",
                   help="training wall-clock budget in minutes (full preset: 85); the cosine schedule is shortened to fit")
    p.add_argument("--targets", help="comma-separated export targets instead of the device profile's")
    p.add_argument("--synth-images", type=positive, default=800, help="size of the built-in synthetic dataset [800]")
    p.add_argument("--backbone-weights", default="auto", help="auto | imagenet | none | PATH.h5 [auto]")
    p.add_argument("--init", metavar="automl:PATH", help="fine-tune from an official google/automl COCO checkpoint "
                   "(folder, .tgz, or a name such as efficientdet-lite0 to download); sets the variant")
    p.add_argument("--out", required=True, help="run directory, e.g. runs/NAME")
    p.set_defaults(func=run_cli)


def _edgedet(*args) -> list[str]:
    return [sys.executable, "-m", "edgedet", *map(str, args)]


def plan(args) -> list[Stage]:
    """Build the stage list (folders, inputs, commands) from the CLI arguments."""
    from edgedet.devices import load_profile

    out = Path(args.out).resolve()  # one spelling of the run folder, whatever the cwd
    profile = load_profile(args.device)
    preset = dict(PRESETS[args.preset or ("quick" if args.data is None else "full")])
    for key in ("image_size", "epochs", "qat_epochs", "batch", "time_limit"):
        if getattr(args, key, None):
            preset[key] = getattr(args, key)
    size_args = ["--image-size", preset["image_size"]] if preset["image_size"] else []
    if not preset["image_size"] and getattr(profile, "input_size", None):
        size_args = ["--image-size", profile.input_size]
    data, s_data = _data_stage(args, out)

    d_train = out / "2_train"
    start = ["--backbone-weights", args.backbone_weights]
    if getattr(args, "init", None):
        init = _absolute_init(args.init)
        from edgedet.model.automl_import import peek_variant

        args.model = peek_variant(init)  # file names and the report follow the checkpoint's variant
        start = ["--init", init]
    from edgedet.model.config import get_config

    get_config(args.model, image_size=size_args[1] if size_args else None)  # a bad variant or size: now, not after data
    train_cmd = _edgedet(
        "train", "--data", data, "--model", args.model, *size_args, "--epochs", preset["epochs"],
        "--batch", preset["batch"], *start, *preset["train_args"],
        *(["--time-limit", preset["time_limit"]] if preset["time_limit"] else []), "--out", d_train,
    )
    s_train = Stage("train", d_train, {"data": s_data.input_hash, "cmd": train_cmd[3:]}, [train_cmd],
                    [str(d_train / "best.weights.h5")])

    d_qat = out / "3_qat"
    qat_cmd = _edgedet("quantize", "qat", "--weights", d_train, "--data", data,
                       "--epochs", preset["qat_epochs"], *preset.get("qat_args", []), "--out", d_qat)
    s_qat = Stage("qat", d_qat, {"train": "2_train/best.weights.h5", "cmd": qat_cmd[3:]}, [qat_cmd])

    s_conv = _convert_stage(args, out, profile, preset, data, d_train, d_qat)
    artifacts = s_conv.outputs

    d_val = out / "5_validate"
    val_cmd = _edgedet("validate", "--baseline", d_train, "--models", *artifacts, "--data", data,
                       "--split", _report_split(args, data), "--device", args.device, "--data-plot", s_data.folder / "stats.png", "--out", d_val)
    s_val = Stage("validate", d_val, {"cmd": val_cmd[3:]}, [val_cmd], [str(d_val / "report.json")])
    return [s_data, s_train, s_qat, s_conv, s_val]


def _report_split(args, data: Path) -> str:
    """The split the report measures: test, or val for a dataset that has no test images (a YOLO
    export with train/ and val/ only), said once here rather than failing after training."""
    if args.data is None:
        return "test"  # the built-in dataset has one
    try:
        from edgedet.train.datasets import load_dataset

        splits = load_dataset(str(data)).splits
    except Exception:  # noqa: BLE001 - the data stage reports an unreadable dataset in its own words
        return "test"
    if splits.get("test") or not splits.get("val"):
        return "test"
    print(f"note: {args.data} has no test images: the report measures on the val split, which the "
          "QAT/PTQ choice also uses, so its AP is not a held-out figure", flush=True)
    return "val"


def _data_stage(args, out: Path) -> tuple[Path, Stage]:
    """The dataset folder (the built-in synthetic one under ``out`` when ``--data`` is not given)
    and the stage that writes it, checks it and plots its statistics."""
    builtin = args.data is None
    if builtin:
        data = out / "1_data" / "synth"
        data_inputs = {"dataset": "builtin-synth", "images": args.synth_images}
    else:
        from edgedet.train.layouts import split_format

        fmt, raw = split_format(args.data)
        real = Path(raw).resolve()
        if not real.exists():
            raise DataError(f"{args.data}: dataset path does not exist")
        data = Path(f"{fmt}:{real}") if fmt else real  # the stages read the format prefix
        data_inputs = {"dataset": str(data), "fingerprint": dataset_fingerprint(real)}
    d_data = out / "1_data"
    data_cmds = []
    if builtin:
        data_cmds.append(_edgedet("data", "synth", data, "--num-images", args.synth_images, "--overwrite"))
    # `data check --json` prints its report; the pipeline keeps it as the stage's output.
    data_cmds.append(_edgedet("data", "check", data, "--fix", "--json") + [f">{d_data / 'check.json'}"])
    # The picture to look at before training: counts, box sizes, sample images with boxes.
    data_cmds.append(_edgedet("data", "stats", data, "--plot", d_data / "stats.png"))
    return data, Stage("data", d_data, data_inputs, data_cmds, [str(d_data / "check.json"), str(d_data / "stats.png")])


def _convert_stage(args, out: Path, profile, preset: dict, data: Path, d_train: Path, d_qat: Path) -> Stage:
    """Export every target of the profile (or ``--targets``); its outputs are the files to validate."""
    d_conv = out / "4_convert"
    targets = args.targets.split(",") if getattr(args, "targets", None) else list(profile.targets)
    # Integer targets come from the QAT checkpoint, the others from the float one (the registry
    # says which). openvino-int8 from QAT goes through the QDQ ONNX: on the quick start it lost
    # 0.34 AP against 1.87 for NNCF post-training quantization of the float IR.
    from edgedet.convert.registry import get_target

    from_qat = [t for t in targets if get_target(t).quantized_int8]
    from_float = [t for t in targets if not get_target(t).quantized_int8]
    conv_cmds, artifacts = [], []
    # Separate folders: both runs name their files <variant>_<target>. The float run also makes
    # post-training int8 of the integer targets: a short QAT can end below PTQ, so `quantize
    # choose` ships, per target, whichever has the higher AP on the validation split.
    for src, ts, sub in ((d_train, from_float + from_qat, "float"), (d_qat, from_qat, "qat")):
        if not ts:
            continue
        calib = ["--calib-data", data, "--calib-count", preset["calib"]] if sub == "float" else []
        conv_cmds.append(_edgedet("convert", "--weights", src, *sum((["--target", t] for t in ts), []), *calib,
                                  "--out", d_conv / sub))
    artifacts += [str(d_conv / "float" / target_filename(t, args.model)) for t in from_float]
    if from_qat:
        names = [target_filename(t, args.model) for t in from_qat]
        conv_cmds.append(_edgedet("quantize", "choose", "--qat", d_conv / "qat", "--ptq", d_conv / "float",
                                  "--names", ",".join(names), "--data", data, "--split", "val",
                                  "--out", d_conv / "int8"))
        artifacts += [str(d_conv / "int8" / n) for n in names]
    return Stage("convert", d_conv, {"targets": targets, "cmds": [c[3:] for c in conv_cmds]}, conv_cmds, artifacts)


def _absolute_init(init: str) -> str:
    """``automl:PATH`` with PATH made absolute (stage commands may run elsewhere); names stay as they are."""
    spec = init[len("automl:"):] if init.startswith("automl:") else init
    return f"automl:{Path(spec).resolve()}" if Path(spec).expanduser().exists() else init


def target_filename(target: str, stem: str) -> str:
    """The file (or OpenVINO folder) name `edgedet convert` writes for a target."""
    from edgedet.convert.registry import get_target

    return get_target(target).filename(stem)


def _fmt(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m:02d}:{s:02d}"


def run_pipeline(args) -> int:
    out = Path(args.out).resolve()
    stages = plan(args)  # checks the arguments before anything is written
    check_toolchains(next(s for s in stages if s.name == "convert").inputs["targets"])
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    for i, stage in enumerate(stages, 1):
        chain_inputs(stages[: i])
        head = f"[{i}/{len(stages)} {stage.name}]"
        if stage.is_done():
            print(f"{head} up to date, skipped ({stage.folder})", flush=True)
            continue
        set_aside_if_changed(stage)
        stage.folder.mkdir(parents=True, exist_ok=True)
        for sub in (stage.folder, *(p for p in stage.folder.iterdir() if p.is_dir())):
            sweep_stale_temps(sub)  # what a killed stage child was writing
        stage.write_manifest(0.0, status="running")  # what a resume must match
        print(f"{head} running (pipeline elapsed {_fmt(time.time() - t0)})", flush=True)
        ts = time.time()
        for cmd in stage.commands:
            cmd = with_resume(stage, cmd)
            rc = run_child(cmd, stage.folder / "stage.log")
            # `edgedet validate` exits 1 when a model missed a device threshold: the report is
            # complete, so the stage is done; the summary's exit code says so (CI gating).
            if stage.name == "validate" and rc == 1 and (stage.folder / "report.json").exists():
                continue
            if rc != 0:
                # the child's own error line was just shown: point at it rather than repeat it
                err = "its error is above" if getattr(run_child, "last_error", "") else f"exit code {rc}"
                raise EdgedetError(
                    f"stage {stage.name} failed ({err}); "
                    f"completed stages are kept, log: {stage.folder / 'stage.log'}; re-run the same command to resume"
                )
        stage.write_manifest(time.time() - ts)
        print(f"{head} done in {_fmt(time.time() - ts)}", flush=True)
    print(f"pipeline finished in {_fmt(time.time() - t0)}")
    return _print_summary(stages[-1].folder)


# What the stages import besides the export toolchains: training, QAT, evaluation, the plots.
STAGE_MODULES = ("tensorflow", "tf_keras", "tensorflow_model_optimization", "pycocotools", "matplotlib", "yaml", "PIL")


def check_toolchains(targets: list[str]) -> None:
    """Every module any stage needs, before the first stage writes anything: one line, one install."""
    from edgedet.convert.registry import get_target
    from edgedet.extras import has_modules

    need = list(STAGE_MODULES) + [m for t in targets for m in get_target(t).requires]
    missing = list(dict.fromkeys(m for m in need if not has_modules(m)))
    if missing:
        raise ToolchainError(f"edgedet pipeline needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                             f'not installed: pip install "edgedet[all]"')


def _print_summary(report_dir: Path) -> int:
    """Print the per-model table and the report path; 1 when a model missed a threshold."""
    md = report_dir / "report.md"
    if md.exists():
        # The first table of report.md is the per-model summary.
        table = []
        for ln in md.read_text().splitlines():
            if ln.startswith("|"):
                table.append(ln)
            elif table:
                break
        print("\n".join(table))
    html = report_dir / "report.html"
    print(f"report: {html.resolve()}")
    try:
        report = json.loads((report_dir / "report.json").read_text())
    except (OSError, ValueError):
        return 1
    bad = [m for m in report.get("models", []) if m.get("status") != "pass"]
    if bad:
        print(f"{len(bad)} model(s) missed a threshold or failed; see the report")
    from edgedet.runtime.report.recommend import NO_FILE

    ship = report.get("recommendation")
    if ship:
        print(f"{ship['name']}: {ship['reason']}")
    if ship and ship.get("meets_latency_budget") is False:
        print(f"file to ship: none meets the latency budget; the nearest: {ship['path']}")
    else:
        print(f"file to ship: {ship['path']}" if ship else f"file to ship: none ({NO_FILE})")
    return 1 if bad else 0


def run_cli(args: argparse.Namespace) -> int:
    try:
        return run_pipeline(args)
    except KeyError as exc:  # unknown preset etc.
        raise ConfigError(f"pipeline: {exc}") from exc
