"""What a conversion starts from: a training run (float or QAT) or an ONNX file.

:class:`Source` loads lazily: a run's Keras model is built only when a target needs it, and an
ONNX file is imported through onnx2tf only when a TFLite target asks for a Keras model.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from edgedet.errors import ModelFileError
from edgedet.files import model_kind
from edgedet.runtime.metadata import ModelMeta


@dataclass
class Source:
    """The model being exported.

    Attributes:
        kind: "float" | "qat" (a training run) or "onnx" (``--from``).
        stem: file-name stem of the artifacts (``<stem>_<target>.<ext>``).
        meta: metadata every artifact starts from (labels, size, normalisation, anchors,
            provenance, baseline); each target fills in ``target`` and ``quantization``.
        path: the run folder or the ONNX file.
        dataset: dataset path from run.json (for the suggested ``edgedet validate``), or None.
    """

    kind: str
    stem: str
    meta: ModelMeta
    path: str
    dataset: str | None = None
    _model: object = None
    _float_model: object = None
    extra: dict = field(default_factory=dict)

    @property
    def is_qat(self) -> bool:
        return self.kind == "qat"

    def model(self):
        """The tf_keras model (QAT-applied for a QAT run; onnx2tf import for ``--from``)."""
        if self._model is None:
            if self.kind == "onnx":
                from edgedet.convert.onnx_import import import_onnx

                self._model = import_onnx(self.path, self.meta)
            else:  # pragma: no cover - runs load eagerly in load_run_source
                raise RuntimeError("run model not loaded")
        return self._model

    def meta_for(self, target: str) -> ModelMeta:
        """A fresh copy of the base metadata for one artifact."""
        m = replace(self.meta, target=target)
        m.extra = dict(self.meta.extra)
        m.quantization = dict(self.meta.quantization)
        return m


def _baseline(metrics: dict) -> dict | None:
    keep = {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return keep or None


def load_run_source(run_dir: str) -> Source:
    """Load a training run with :func:`edgedet.runs.load_run`."""
    from edgedet.model import count_macs
    from edgedet.model.efficientdet import OUTPUT_NAMES
    from edgedet.runs import load_run

    model, info = load_run(run_dir)
    cfg = info.config
    meta = ModelMeta(
        labels=list(info.class_names),
        input_size=(int(cfg.image_size), int(cfg.image_size)),
        layout="NHWC",
        mean=tuple(float(v) for v in cfg.mean),
        std=tuple(float(v) for v in cfg.std),
        resize="letterbox",
        anchors=cfg.anchor_config.to_dict(),
        outputs="raw",
        output_names=list(OUTPUT_NAMES),
        model=cfg.name,
        source_sha256=info.weights_sha256,
        baseline=_baseline(info.metrics),
    )
    if len(meta.labels) != cfg.num_classes:
        raise ModelFileError(f"{run_dir}: run.json lists {len(meta.labels)} class names for a {cfg.num_classes}-class model")
    try:
        meta.macs = int(count_macs(model))
    except Exception:  # noqa: BLE001 - MACs are informative only
        meta.macs = info.data.get("macs")
    if not meta.macs:
        # QAT wrappers hide the conv layers from the graph walk: count the float twin (same config).
        from edgedet.model import build_model

        meta.macs = int(count_macs(build_model(cfg)))
    meta.extra["source"] = {"run": os.path.abspath(str(run_dir)), "kind": info.kind, "weights": str(info.weights_path)}
    stem = f"{cfg.name}"
    data = info.data.get("dataset")
    if isinstance(data, dict):
        data = data.get("path")
    src = Source(kind="qat" if info.kind == "qat" else "float", stem=stem, meta=meta, path=str(run_dir), dataset=data, _model=model)
    return src


def load_onnx_source(path: str) -> Source:
    """An ONNX file: metadata from its ``metadata_props`` when it is one of ours.

    A foreign ONNX without edgedet metadata gets labels ``class0..`` inferred from the raw-output
    shapes it must have (10 outputs, per level ``A*C`` logits and ``A*4`` deltas).
    """
    from edgedet.runtime.metadata import read_metadata

    if not os.path.isfile(path):
        raise ModelFileError(f"--from {path}: no such ONNX file")
    try:
        kind = model_kind(path)
    except ModelFileError:
        kind = None
    if kind != "onnx":
        raise ModelFileError(f"--from {path}: not an .onnx file (--from imports ONNX detectors; "
                             "edgedet's own files come from --weights RUN)")
    try:
        meta = read_metadata(path)
    except ModelFileError:
        raise
    if meta is None:
        meta = _guess_meta(path)
    meta = replace(meta, target="", quantization={"method": "none"})
    meta.extra = {k: v for k, v in meta.extra.items() if k not in ("edgetpu",)}
    meta.extra["source"] = {"onnx": os.path.abspath(path)}
    import hashlib

    with open(path, "rb") as f:
        meta.source_sha256 = hashlib.sha256(f.read()).hexdigest()
    stem = os.path.splitext(os.path.basename(path))[0]
    if stem.endswith("_onnx"):
        stem = stem[: -len("_onnx")]
    return Source(kind="onnx", stem=stem, meta=meta, path=path)


def _guess_meta(path: str) -> ModelMeta:
    import onnx

    from edgedet.runtime.anchors import AnchorConfig

    g = onnx.load(path, load_external_data=False).graph
    inp = g.input[0]
    dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise ModelFileError(f"--from {path}: expected one 4-D image input, got shape {dims}")
    nchw = dims[1] == 3 and dims[3] != 3
    size = (dims[2], dims[3]) if nchw else (dims[1], dims[2])
    a = AnchorConfig().num_anchors
    chans = []
    for o in g.output:
        od = [d.dim_value for d in o.type.tensor_type.shape.dim]
        if len(od) == 4:
            chans.append(od[1] if nchw else od[3])
    cls = [c for c in chans if c != 4 * a]
    if len(g.output) != 10 or not cls or cls[0] % a:
        raise ModelFileError(f"--from {path}: no edgedet metadata and outputs do not look like 5 levels of class logits + box deltas")
    n = cls[0] // a
    return ModelMeta(labels=[f"class{i}" for i in range(n)], input_size=size, layout="NCHW" if nchw else "NHWC",
                     output_names=[o.name for o in g.output])
