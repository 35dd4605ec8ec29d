"""google/automl EfficientDet checkpoints -> our Functional model, variable by variable.

The official COCO checkpoints (``efficientdet-d0.tar.gz``, ``efficientdet-lite0.tgz`` ...) are TF1
name-based checkpoints. They are read with ``tf.train.load_checkpoint`` only: nothing in the
archive is executed. Every weight is stored twice, as ``<name>`` and as its
``<name>/ExponentialMovingAverage`` shadow; the shadow is taken, as automl does for evaluation.

Name scheme (automl ``efficientdet_keras.py`` and ``backbone/efficientnet_model.py``):

=====================================  ==================================================
ours                                   automl
=====================================  ==================================================
``stem_conv`` / ``stem_bn``            ``<bb>/stem/conv2d`` / ``<bb>/stem/tpu_batch_normalization``
``block2a_expand_conv`` (+ ``_bn``)    ``<bb>/blocks_1/conv2d`` (+ ``tpu_batch_normalization``)
``block2a_dwconv`` / ``block2a_bn``    ``<bb>/blocks_1/depthwise_conv2d`` / ``..._normalization_1``
``block2a_se_reduce`` / ``_se_expand`` ``<bb>/blocks_1/se/conv2d`` / ``se/conv2d_1``
``block2a_project_conv`` (+ ``_bn``)   ``<bb>/blocks_1/conv2d_1`` (+ ``..._normalization_2``)
``p6_resample_conv`` / ``_bn``         ``resample_p6/conv2d`` / ``resample_p6/bn``
``fpnC_nodeI_inO_conv`` / ``_bn``      ``fpn_cells/cell_C/fnodeI/resample_J_O_{5+I}/conv2d`` / ``bn``
``fpnC_nodeI_fuse`` weight k           ``fpn_cells/cell_C/fnodeI/WSM`` (k=0), ``WSM_k``
``fpnC_nodeI_dw`` + ``_pw``            ``fpn_cells/cell_C/fnodeI/op_after_combine{5+I}/conv``
``fpnC_nodeI_bn``                      ``fpn_cells/cell_C/fnodeI/op_after_combine{5+I}/bn``
``class_net_convR_dw`` + ``_pw``       ``class_net/class-R`` (separable: depthwise/pointwise/bias)
``class_net_bnR_pL``                   ``class_net/class-R-bn-L``
``class_net_predict_dw`` + ``_pw``     ``class_net/class-predict``
=====================================  ==================================================

(``box_net`` likewise with ``box-R``.) Blocks without an expand conv (expand ratio 1) shift the
numbering: ``conv2d`` is then the project conv and the BNs are ``tpu_batch_normalization`` (after
the depthwise) and ``_1``. Kernel layouts are TF's on both sides, so values copy unchanged.
Anchor order and box coding are automl's too (see :mod:`edgedet.runtime.anchors`), so no
prediction channel needs permuting.
"""
from __future__ import annotations

import re

import numpy as np

from edgedet.errors import ConfigError, ModelFileError

EMA_SUFFIX = "/ExponentialMovingAverage"
COCO_CLASSES = 90
# Checkpoint entries that are not weights of the network.
_IGNORED = re.compile(r"^global_step$|/(Momentum|Adam(_1)?|RMSProp(_1)?)$")
_BN = {"gamma": "gamma", "beta": "beta", "moving_mean": "moving_mean", "moving_variance": "moving_variance"}


def read_checkpoint(prefix: str) -> dict[str, np.ndarray]:
    """``{name: array}`` of a checkpoint, EMA shadows already taken where present.

    Args:
        prefix: checkpoint prefix (``.../efficientdet-d0/model``) or its folder.

    Returns:
        One entry per network weight (raw name, no ``/ExponentialMovingAverage``); optimizer slots
        and ``global_step`` are dropped.
    """
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(str(prefix))
        shapes = reader.get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError) as exc:
        raise ModelFileError(f"{prefix}: not a readable TensorFlow checkpoint ({str(exc).splitlines()[0]})") from None
    names = [n for n in shapes if not n.endswith(EMA_SUFFIX) and not _IGNORED.search(n)]
    wanted = {name: name + EMA_SUFFIX if name + EMA_SUFFIX in shapes else name for name in names}
    # A shadow whose raw weight is missing is still a weight we must account for.
    wanted.update({n[: -len(EMA_SUFFIX)]: n for n in shapes if n.endswith(EMA_SUFFIX) and n[: -len(EMA_SUFFIX)] not in shapes})
    out = {}
    try:
        for name, src in wanted.items():
            out[name] = np.asarray(reader.get_tensor(src))
    except (tf.errors.OpError, RuntimeError, IndexError, ValueError) as exc:
        # the index was readable but the data shard is missing or cut off (an interrupted
        # download or extraction): the reader raises these for a short read
        raise ModelFileError(f"{prefix}: checkpoint data missing or truncated (.data-* shard: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    return out


def infer_variant(shapes: dict[str, tuple], hint: str = "") -> tuple[str, int]:
    """The row of our variant table a checkpoint was made for, and its class count.

    The backbone scope, BiFPN width/depth, head depth and fusion (``WSM`` weights or not) are read
    from the variables. D6 and D7 (and Lite3/Lite3x) differ only in input size and anchor scale,
    which no variable records: ``hint`` (the folder or archive name) decides; D6 otherwise.

    Args:
        shapes: ``{variable name: shape}`` (EMA names may be included; they are ignored).

    Returns:
        ``(variant name, num_classes)``.
    """
    from edgedet.model.config import VARIANTS

    names = [n for n in shapes if not n.endswith(EMA_SUFFIX)]
    backbones = {n.split("/")[0] for n in names if re.match(r"efficientnet-(b\d|lite\d)/", n)}
    try:
        width = int(shapes["class_net/class-0/pointwise_kernel"][-1])
        predict = int(shapes["class_net/class-predict/bias"][0])
    except KeyError as exc:
        raise ModelFileError(f"not an EfficientDet checkpoint: no variable {exc.args[0]}") from None
    cells = {int(m.group(1)) for n in names if (m := re.match(r"fpn_cells/cell_(\d+)/", n))}
    heads = {int(m.group(1)) for n in names if (m := re.match(r"class_net/class-(\d+)/", n))}
    fusion = "fast" if any(re.search(r"/WSM(_\d+)?$", n) for n in names) else "sum"
    found = dict(backbone=",".join(sorted(backbones)) or "none", fpn_width=width, fpn_layers=len(cells),
                 head_layers=len(heads), fusion=fusion)
    rows = [c for c in VARIANTS.values() if re.fullmatch(r"d\d|lite\d", c.name)
            and all(getattr(c, k) == v for k, v in found.items())]
    if not rows:
        desc = ", ".join(f"{k} {v}" for k, v in found.items())
        raise ConfigError(f"checkpoint variables fit no EfficientDet variant we build ({desc})")
    hinted = [c for c in rows if re.search(rf"(?<![a-z0-9]){c.name}(?![0-9x])", hint.lower())]
    if re.search(r"lite3x|d7x", hint.lower()):
        raise ConfigError(f"{hint}: efficientdet-lite3x and -d7x are not variants edgedet builds")
    num_anchors = rows[0].num_anchors
    if predict % num_anchors:
        raise ModelFileError(f"class-predict has {predict} outputs, not a multiple of {num_anchors} anchors")
    return (hinted or rows)[0].name, predict // num_anchors


def _backbone_names(model, backbone: str) -> dict[str, str]:
    """Our backbone layer name -> automl layer path (without the weight name)."""
    from edgedet.model.pretrained import _block_prefixes

    layers = {layer.name for layer in model.layers}
    out = {"stem_conv": f"{backbone}/stem/conv2d", "stem_bn": f"{backbone}/stem/tpu_batch_normalization"}
    for i, p in enumerate(_block_prefixes(backbone)):
        b = f"{backbone}/blocks_{i}/"
        bn = [f"{b}tpu_batch_normalization" + (f"_{k}" if k else "") for k in range(3)]
        expand = p + "expand_conv" in layers
        if expand:
            out[p + "expand_conv"], out[p + "expand_bn"] = b + "conv2d", bn[0]
        out[p + "dwconv"], out[p + "bn"] = b + "depthwise_conv2d", bn[int(expand)]
        out[p + "se_reduce"], out[p + "se_expand"] = b + "se/conv2d", b + "se/conv2d_1"
        out[p + "project_conv"] = b + ("conv2d_1" if expand else "conv2d")
        out[p + "project_bn"] = bn[1 + int(expand)]
    return out


def _detector_name(layer: str) -> str | None:
    """automl layer path for one of our BiFPN/head layer names (None: not a weight layer)."""
    from edgedet.model.bifpn import NODES

    if m := re.fullmatch(r"p6_resample_(conv|bn)", layer):
        return "resample_p6/" + ("conv2d" if m.group(1) == "conv" else "bn")
    if m := re.fullmatch(r"fpn(\d+)_node(\d+)_(?:in(\d+)_(conv|bn)|(dw|pw|bn|fuse))", layer):
        cell, node = int(m.group(1)), int(m.group(2))
        base = f"fpn_cells/cell_{cell}/fnode{node}/"
        if m.group(3) is not None:
            offset = int(m.group(3))
            j = NODES[node][1].index(offset)
            return f"{base}resample_{j}_{offset}_{5 + node}/" + ("conv2d" if m.group(4) == "conv" else "bn")
        part = m.group(5)
        if part == "fuse":
            return base + "WSM"
        return f"{base}op_after_combine{5 + node}/" + ("bn" if part == "bn" else "conv")
    if m := re.fullmatch(r"(class|box)_net_(?:conv(\d+)_(?:dw|pw)|predict_(?:dw|pw)|bn(\d+)_p(\d))", layer):
        kind = m.group(1)
        if m.group(3) is not None:
            return f"{kind}_net/{kind}-{m.group(3)}-bn-{m.group(4)}"
        return f"{kind}_net/{kind}-" + (m.group(2) if m.group(2) is not None else "predict")
    return None


def weight_names(model, cfg) -> list[list[str]]:
    """For each of ``model.weights`` (in order), the checkpoint names that make it up.

    One name per weight, except a fusion layer's weight vector: one scalar ``WSM``/``WSM_k`` per input.
    """
    bb = _backbone_names(model, cfg.backbone)
    result: dict[int, list[str]] = {}
    for layer in model.layers:
        path = bb.get(layer.name) or _detector_name(layer.name)
        for w in layer.weights:
            leaf = w.name.split("/")[-1].split(":")[0]
            if path is None:
                raise ModelFileError(f"internal: no automl name for layer {layer.name}")
            if leaf == "fusion_weights":
                names = [path + (f"_{k}" if k else "") for k in range(int(w.shape[0]))]
            elif leaf in _BN:
                names = [f"{path}/{leaf}"]
            elif leaf == "kernel" and layer.name.endswith("_pw"):
                names = [f"{path}/pointwise_kernel"]
            else:
                names = [f"{path}/{leaf}"]
            result[id(w)] = names
    return [result[id(w)] for w in model.weights]


def assign_checkpoint(model, cfg, values: dict[str, np.ndarray], source: str = "checkpoint") -> list[str]:
    """Copy ``values`` (from :func:`read_checkpoint`) into ``model``; all-or-nothing.

    The class predictor's pointwise kernel and bias are left as initialised when ``cfg.num_classes``
    differs from the checkpoint's (fine-tuning to another label set).

    Returns:
        The checkpoint names left unused on purpose (the class predictor when re-initialised).

    Raises:
        ModelFileError: one line listing every model weight missing from the checkpoint (or with
            the wrong shape) and every checkpoint variable that maps to nothing. No weight is
            assigned in that case.
    """
    plan, missing, used = [], [], set()
    skipped = []
    for w, names in zip(model.weights, weight_names(model, cfg)):
        used.update(names)
        if ("/class-predict/" in names[0] and cfg.num_classes != _ckpt_classes(values, cfg)
                and names[0] in values and values[names[0]].shape != tuple(w.shape)):
            # Another class count: the predictor's outputs start fresh (its depthwise half is kept, as
            # automl's own fine-tuning restore keeps every shape-compatible weight).
            skipped.append(names[0])
            continue
        absent = [n for n in names if n not in values]
        if absent:
            missing += absent
            continue
        arr = np.stack([values[n] for n in names]) if len(names) > 1 else values[names[0]]
        if tuple(arr.shape) != tuple(w.shape):
            missing.append(f"{names[0]} (shape {list(arr.shape)}, model needs {list(w.shape)})")
            continue
        plan.append((w, arr))
    extra = sorted(set(values) - used)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} model weight(s) not found: {', '.join(missing)}")
        if extra:
            parts.append(f"{len(extra)} checkpoint variable(s) that map to nothing: {', '.join(extra)}")
        raise ModelFileError(f"{source}: cannot import as efficientdet-{cfg.name}; " + "; ".join(parts))
    for w, arr in plan:
        w.assign(arr.astype(w.dtype.as_numpy_dtype))
    return skipped


def _ckpt_classes(values: dict[str, np.ndarray], cfg) -> int:
    bias = values.get("class_net/class-predict/bias")
    return int(bias.shape[0]) // cfg.num_anchors if bias is not None else COCO_CLASSES


# COCO category id -> name (automl's 90-slot label map; the 10 unused ids get placeholder names).
_COCO = (
    "person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant - stop_sign "
    "parking_meter bench bird cat dog horse sheep cow elephant bear zebra giraffe - backpack umbrella - - "
    "handbag tie suitcase frisbee skis snowboard sports_ball kite baseball_bat baseball_glove skateboard "
    "surfboard tennis_racket bottle - wine_glass cup fork knife spoon bowl banana apple sandwich orange "
    "broccoli carrot hot_dog pizza donut cake chair couch potted_plant bed - dining_table - - toilet - tv "
    "laptop mouse remote keyboard cell_phone microwave oven toaster sink refrigerator - book clock vase "
    "scissors teddy_bear hair_drier toothbrush"
).split()


def coco_class_names() -> list[str]:
    """The 90 class names of the official checkpoints; index c is COCO category id c + 1."""
    return [n.replace("_", " ") if n != "-" else f"unused{i + 1}" for i, n in enumerate(_COCO)]


class AutomlCheckpoint:
    """An opened automl checkpoint: its values (EMA taken), variant and class count.

    Attributes:
        spec: what the user passed (``automl:PATH`` or ``automl:efficientdet-NAME``).
        prefix: the checkpoint prefix read.
        variant: our variant name (``d0``, ``lite0`` ...).
        num_classes: classes of its class predictor (90 for the official ones).
        ema: whether EMA shadows were present (and taken).
    """

    def __init__(self, spec: str, log=None):
        from edgedet.model.automl_fetch import resolve

        self.spec = spec
        self.prefix, hint = resolve(spec, log=log)
        self.values = read_checkpoint(str(self.prefix))
        self.variant, self.num_classes = infer_variant({n: v.shape for n, v in self.values.items()}, hint)
        self.ema = _has_ema(str(self.prefix))

    def config(self, num_classes: int | None = None, image_size: int | None = None):
        """Our ModelConfig for this checkpoint, with the user's class count / input size."""
        from edgedet.model.config import get_config

        return get_config(self.variant, num_classes=num_classes or self.num_classes, image_size=image_size)

    def load_into(self, model, cfg, log=None) -> None:
        """Assign every weight of ``model`` (built from :meth:`config`); one line when the predictor starts fresh."""
        assign_checkpoint(model, cfg, self.values, source=str(self.prefix))
        if cfg.num_classes != self.num_classes and log:
            log(f"automl checkpoint: {self.num_classes} classes, this model {cfg.num_classes}: every layer imported "
                f"except class-predict's {self.num_classes}-class outputs (pointwise kernel, bias), which start fresh")

    def describe(self, cfg) -> dict:
        """What run.json records about the import."""
        return {"automl": self.spec, "checkpoint": str(self.prefix), "variables": len(self.values),
                "ema": self.ema, "checkpoint_classes": self.num_classes,
                "class_predict": "imported" if cfg.num_classes == self.num_classes else "fresh"}


def open_init(init: str, log=None) -> AutomlCheckpoint:
    """``--init automl:SPEC`` -> the opened checkpoint (other schemes are a one-line error)."""
    if not str(init).startswith("automl:"):
        raise ConfigError(f"--init {init!r}: expected automl:PATH (checkpoint folder or .tgz) or "
                          "automl:efficientdet-NAME (official download)")
    return AutomlCheckpoint(init, log=log)


def peek_variant(init: str, log=None) -> str:
    """The variant behind ``--init automl:SPEC`` from variable names and shapes only (no values read)."""
    import tensorflow as tf

    from edgedet.model.automl_fetch import resolve

    if not str(init).startswith("automl:"):
        open_init(init)  # the one-line error for another scheme
    prefix, hint = resolve(init, log=log)
    return infer_variant(dict(tf.train.list_variables(str(prefix))), hint)[0]


def _has_ema(prefix: str) -> bool:
    import tensorflow as tf

    return any(n.endswith(EMA_SUFFIX) for n, _ in tf.train.list_variables(prefix))


def import_run(spec: str, out, class_names: list[str] | None = None, image_size: int | None = None,
               log=None) -> dict:
    """``edgedet import automl``: write a run folder (run.json + best weights) from a checkpoint.

    Args:
        spec: checkpoint folder, archive or official name (``automl:`` prefix optional).
        out: run folder to create; must not hold a run already.
        class_names: the run's classes (default: the checkpoint's 90 COCO classes); another
            count re-initialises the class predictor.
        image_size: input size (default: the variant's).

    Returns:
        The run.json written. Nothing is written when any variable cannot be mapped.
    """
    from pathlib import Path

    from edgedet.model.efficientdet import build_model
    from edgedet import runs as ckpt
    from edgedet.files import atomic_write_json

    out = Path(out)
    if (out / ckpt.RUN_JSON).exists():
        raise ConfigError(f"--out {out}: already holds a run (choose another folder)")
    source = AutomlCheckpoint(spec, log=log)
    cfg = source.config(len(class_names) if class_names else None, image_size)
    names = list(class_names) if class_names else (coco_class_names() if cfg.num_classes == COCO_CLASSES
                                                    else [f"class{i}" for i in range(cfg.num_classes)])
    model = build_model(cfg)
    source.load_into(model, cfg, log=log)
    out.mkdir(parents=True, exist_ok=True)
    ckpt.save_weights(model, out / ckpt.BEST)
    data = {
        "kind": "float", "variant": cfg.name, "image_size": cfg.image_size, "num_classes": cfg.num_classes,
        "class_names": names, "mean": list(cfg.mean), "std": list(cfg.std), "model_config": cfg.to_dict(),
        "dataset": None, "epochs": 0, "epochs_done": 0, "status": "done", "best": {},
        "weights": {"best": ckpt.BEST}, "weights_sha256": ckpt.sha256_file(out / ckpt.BEST),
        "imported": source.describe(cfg),
    }
    atomic_write_json(out / ckpt.RUN_JSON, data)
    return data
