"""Model metadata embedded in every exported artifact.

A model file alone is enough to run and report on it: labels, input size, layout,
normalisation, anchors, output layout, quantization, provenance hashes and the float
baseline mAP travel inside the file.

Where it lives:
    * TFLite: the standard TFLite Model Metadata (what MediaPipe and the Task Library read;
      written by ``edgedet convert``) with ``edgedet.json`` + ``labels.txt`` as its associated
      files, i.e. a zip appended to the flatbuffer, read here with :mod:`zipfile`. Files with
      standard metadata only (Model Maker) give labels and normalisation through
      :mod:`edgedet.runtime.tflite_standard`.
    * ONNX: ``metadata_props["edgedet"]`` (JSON string).
    * OpenVINO IR: ``rt_info["edgedet"]`` (JSON string).

This module is pure Python + numpy; the ONNX/OpenVINO readers import their runtimes lazily.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import asdict, dataclass, field
from typing import Any

from edgedet.errors import ModelFileError
from edgedet.files import atomic_write_bytes, model_kind
from edgedet.runtime.anchors import AnchorConfig

META_KEY = "edgedet"
META_NAME = "edgedet.json"
SCHEMA_VERSION = 1


@dataclass
class ModelMeta:
    """Everything the runtime needs besides the weights.

    Attributes:
        labels: class names, index = class id.
        input_size: ``(height, width)`` of the network input.
        layout: "NHWC" (TFLite, OpenVINO from TF) or "NCHW".
        mean, std: per-channel normalisation in 0..255 pixel units, ``(x - mean) / std``.
        resize: "letterbox" (aspect-preserving, pad bottom/right) or "stretch".
        anchors: :class:`AnchorConfig` as a dict.
        outputs: "raw" (per-level class logits + box deltas) or "nms" (4 standard outputs).
        output_names: raw outputs in order: ``class_p3..class_p7, box_p3..box_p7``.
        model: variant name (e.g. "lite0").
        target: export target that wrote the file (e.g. "tflite-int8").
        quantization: ``{"method": "none|fp16|dynamic|ptq|qat", "io_dtype": ..., ...}``.
        source_sha256, calib_sha256: provenance hashes (may be empty).
        baseline: float baseline metrics ``{"AP": .., "AP50": ..}`` when known.
        macs: multiply-accumulates per image, when known.
    """

    labels: list[str]
    input_size: tuple[int, int]
    layout: str = "NHWC"
    mean: tuple[float, float, float] = (127.0, 127.0, 127.0)
    std: tuple[float, float, float] = (128.0, 128.0, 128.0)
    resize: str = "letterbox"
    anchors: dict = field(default_factory=lambda: AnchorConfig().to_dict())
    outputs: str = "raw"
    output_names: list[str] = field(default_factory=list)
    model: str = ""
    target: str = ""
    quantization: dict = field(default_factory=lambda: {"method": "none"})
    source_sha256: str = ""
    calib_sha256: str = ""
    baseline: dict | None = None
    macs: int | None = None
    schema_version: int = SCHEMA_VERSION
    extra: dict = field(default_factory=dict)

    @property
    def anchor_config(self) -> AnchorConfig:
        return AnchorConfig.from_dict(self.anchors)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_json(self) -> str:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return json.dumps(d, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> "ModelMeta":
        d: dict[str, Any] = json.loads(text)
        known = {f for f in cls.__dataclass_fields__}
        extra = {k: v for k, v in d.items() if k not in known}
        d = {k: v for k, v in d.items() if k in known}
        d["input_size"] = tuple(int(v) for v in d["input_size"])
        for k in ("mean", "std"):
            if k in d:
                d[k] = tuple(float(v) for v in d[k])
        meta = cls(**d)
        meta.extra.update(extra)
        return meta


# ----------------------------------------------------------------------------- TFLite


def embed_tflite(path: str, meta: ModelMeta) -> None:
    """Append the metadata zip to a ``.tflite`` file, atomically (temp file + rename)."""
    with open(path, "rb") as f:
        data = f.read()
    data = data[: _model_length(data)]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(META_NAME, meta.to_json())
        z.writestr("labels.txt", "\n".join(meta.labels) + "\n")
        # The zip comment records where the flatbuffer ends, so re-embedding replaces
        # the old zip instead of stacking a second one.
        z.comment = f"edgedet-model-bytes:{len(data)}".encode()
    atomic_write_bytes(path, data + buf.getvalue())


def _model_length(data: bytes) -> int:
    """Length of the flatbuffer without an edgedet zip appended earlier."""
    tag = b"edgedet-model-bytes:"
    i = data.rfind(tag, max(0, len(data) - 64))
    if i >= 0:
        try:
            return int(data[i + len(tag) :].decode())
        except ValueError:
            pass
    return len(data)


def read_tflite_zip(path: str, label_file: str | None = None) -> tuple[ModelMeta | None, list[str] | None]:
    """Read edgedet metadata and/or the label file from the associated-files zip that
    TFLite Support's format appends to a model (``label_file``: its name as the standard
    metadata gives it; else the first ``*.txt``).

    Raises:
        ModelFileError: ``edgedet.json`` is there but malformed (names the field).
    """
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            text = z.read(META_NAME) if META_NAME in names else None
            txt = [label_file] if label_file in names else [n for n in names if n.endswith(".txt")]
            labels = None
            if txt:
                raw = z.read(txt[0]).decode("utf-8", "replace").splitlines()
                labels = [s.strip() for s in raw if s.strip()]
    except (zipfile.BadZipFile, KeyError, OSError):
        return None, None
    return (None if text is None else _parse_meta(path, text)), labels


def _parse_meta(path: str, text: bytes) -> ModelMeta:
    """``edgedet.json`` -> :class:`ModelMeta`; a bad field is a one-line error naming it."""
    try:
        return ModelMeta.from_json(text)
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: malformed {META_NAME} ({exc})") from None
    except KeyError as exc:
        raise ModelFileError(f"{path}: {META_NAME} lacks the field {exc}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise ModelFileError(f"{path}: malformed {META_NAME} field ({exc})") from None


# ----------------------------------------------------------------------------- dispatch


def read_metadata(path: str) -> ModelMeta | None:
    """Metadata of any supported model file, or ``None`` if it carries none.

    Raises:
        ModelFileError: the file is missing or unreadable.
    """
    if not os.path.exists(path):
        raise ModelFileError(f"{path}: no such model file")
    p = path.rstrip("/")
    kind = model_kind(p)
    if kind == "tflite":
        return read_tflite_zip(p)[0]
    return _read_onnx(p) if kind == "onnx" else _read_openvino(p)


def openvino_xml(path: str) -> str:
    """The ``.xml`` of an OpenVINO model given the file or its folder."""
    if os.path.isdir(path):
        xs = sorted(f for f in os.listdir(path) if f.endswith(".xml"))
        if not xs:
            raise ModelFileError(f"{path}: OpenVINO folder without an .xml model")
        return os.path.join(path, xs[0])
    return path


def _read_onnx(path: str) -> ModelMeta | None:
    try:
        import onnx  # noqa: PLC0415

        model = onnx.load(path, load_external_data=False)
        props = {p.key: p.value for p in model.metadata_props}
    except ImportError:
        try:
            import onnxruntime as ort  # noqa: PLC0415

            sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            props = sess.get_modelmeta().custom_metadata_map
        except ImportError:
            return None
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad file
        raise ModelFileError(f"{path}: cannot read ONNX model ({type(exc).__name__}: {exc})") from exc
    return ModelMeta.from_json(props[META_KEY]) if META_KEY in props else None


def _read_openvino(path: str) -> ModelMeta | None:
    # rt_info is plain XML; parse it without importing openvino so `edgedet info` and
    # reports work anywhere.
    import xml.etree.ElementTree as ET  # noqa: PLC0415

    xml = openvino_xml(path)
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as exc:
        raise ModelFileError(f"{xml}: cannot parse OpenVINO XML ({exc})") from exc
    node = root.find(f"rt_info/{META_KEY}")
    if node is None:
        return None
    return ModelMeta.from_json(node.attrib.get("value", ""))
