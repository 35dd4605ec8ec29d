"""Standard TFLite Model Metadata on every ``.tflite`` edgedet writes.

Apps on Android and in Python run detectors through MediaPipe Tasks' ``ObjectDetector`` or
the TFLite Task Library, and both refuse a model without the TFLite Support ``ModelMetadata``
flatbuffer (buffer named ``TFLITE_METADATA``). This module writes it with MediaPipe's
maintained writer classes (``mediapipe.tasks.python.metadata``):

* name, description, version, author, licence;
* the input image: RGB, normalisation ``(x - mean) / std`` in 0..255 pixel units (ours);
* ``--nms`` files: the four outputs MediaPipe expects (location with BoundingBoxProperties
  ``[ymin, xmin, ymax, xmax]`` boundaries in ratio coordinates, category with the label file,
  score, number of detections) grouped as ``detection_result``;
* raw-output files: each of ``class_p3..box_p7`` named and described, labels on the class tensors;
* associated files, packed by the writer as a zip appended to the flatbuffer (the TFLite
  Support container): ``labels.txt`` (``TENSOR_VALUE_LABELS``) and ``edgedet.json`` (the full
  :class:`ModelMeta`: anchors, quantization, hashes, baseline mAP), which the TF-free runtime
  reads with :mod:`zipfile` as before.

MediaPipe cannot be a declared dependency of the ``convert`` extra: every mediapipe release
that has the metadata writers pins ``absl-py~=2.3`` (or ``protobuf<5``), while
tensorflow-model-optimization 0.8.1 pins ``absl-py~=1.2`` and TensorFlow 2.20 needs
``protobuf>=5.28``, so pip's resolver rejects ``.[all]``; tflite-support 0.4.4 pins
``protobuf<4``. It installs beside them with ``pip install --no-deps mediapipe "absl-py>=2.3,<3"``
(tfmot runs fine on absl 2). Without it, files keep the edgedet zip only and a note says so.
"""
from __future__ import annotations

import json
import sys
import types

from edgedet.runtime.metadata import META_NAME, ModelMeta, embed_tflite

LABELS_NAME = "labels.txt"
AUTHOR = "edgedet"
LICENSE = "Apache-2.0"
INSTALL_HINT = 'pip install --no-deps mediapipe "absl-py>=2.3,<3"'

_RAW_DESCRIPTIONS = {
    "class": "Class logits of pyramid level {lvl}: (1, H, W, A*C), channel a*C + c is anchor a, class c "
             "(labels.txt); apply a sigmoid for scores.",
    "box": "Box deltas of pyramid level {lvl}: (1, H, W, A*4), (ty, tx, th, tw) per anchor against the anchors "
           "in edgedet.json.",
}


def mediapipe_metadata():
    """``(metadata, metadata_info, writer_utils, metadata_fb)`` modules, or ``None`` without mediapipe.

    mediapipe >= 0.10.30 wheels ship ``metadata.py`` but not the compiled
    ``_pywrap_metadata_version`` it imports (only used for the minimum-parser-version
    field), so the writer cannot import. A pure-Python stand-in computes that field the same
    way (see :func:`min_parser_version`).
    """
    try:
        from mediapipe.tasks.metadata import metadata_schema_py_generated as metadata_fb
    except ImportError:
        return None
    name = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"
    try:
        __import__(name)
    except ImportError:
        for part in ("mediapipe.tasks.cc", "mediapipe.tasks.cc.metadata", "mediapipe.tasks.cc.metadata.python"):
            sys.modules.setdefault(part, types.ModuleType(part)).__path__ = []
        shim = types.ModuleType(name)
        shim.GetMinimumMetadataParserVersion = lambda buf: min_parser_version(metadata_fb, buf)
        sys.modules[name] = shim
    try:
        from mediapipe.tasks.python.metadata import metadata
        from mediapipe.tasks.python.metadata.metadata_writers import metadata_info, writer_utils
    except ImportError:
        return None
    return metadata, metadata_info, writer_utils, metadata_fb


def min_parser_version(metadata_fb, buf: bytes) -> str:
    """The oldest metadata parser that reads ``buf``: the schema-member table of TFLite
    Support's ``metadata_version.cc``, for the members a writer can set."""
    m = metadata_fb.ModelMetadataT.InitFromObj(metadata_fb.ModelMetadata.GetRootAsModelMetadata(buf, 0))
    need = [(1, 0, 0)]
    files = list(m.associatedFiles or [])
    for sg in m.subgraphMetadata or []:
        files += list(sg.associatedFiles or [])
        tensors = list(sg.inputTensorMetadata or []) + list(sg.outputTensorMetadata or [])
        for t in tensors:
            files += list(t.associatedFiles or [])
            for pu in t.processUnits or []:
                if pu.optionsType in (4, 5):  # Bert / SentencePiece tokenizer
                    need.append((1, 1, 0))
                elif pu.optionsType == 6:  # Regex tokenizer
                    need.append((1, 2, 1))
            props = getattr(t.content, "contentPropertiesType", 0) if t.content else 0
            if props == 4:  # AudioProperties
                need.append((1, 3, 0))
        if sg.inputProcessUnits or sg.outputProcessUnits:
            need.append((1, 1, 0))
        if sg.inputTensorGroups or sg.outputTensorGroups:
            need.append((1, 2, 0))
        if sg.customMetadata:
            need.append((1, 5, 0))
        if sg.associatedFiles:
            need.append((1, 4, 0))
    for f in files:
        if f.type == 5:  # VOCABULARY
            need.append((1, 0, 1))
        elif f.type == 6:  # SCANN_INDEX_FILE
            need.append((1, 4, 0))
        if f.version:
            need.append((1, 4, 1))
    return ".".join(str(v) for v in max(need))


def _describe(meta: ModelMeta) -> str:
    h, w = meta.input_size
    kind = ("boxes, classes, scores and count after in-graph NMS" if meta.outputs == "nms"
            else "raw per-level class logits and box deltas (decode and NMS with the edgedet runtime)")
    return (f"EfficientDet {meta.model or ''} detector, {h}x{w} RGB input, {meta.num_classes} classes; "
            f"outputs {kind}. edgedet.json holds anchors, quantization, provenance and the float baseline.")


def build_metadata(data: bytes, meta: ModelMeta, mods) -> bytes:
    """The ``ModelMetadata`` flatbuffer for converted model bytes ``data`` (input (1, h, w, 3))."""
    import flatbuffers

    from edgedet import __version__

    metadata, info, wu, fb = mods
    in_names = wu.get_input_tensor_names(data)
    out_names = wu.get_output_tensor_names(data)
    labels = info.LabelFileMd(LABELS_NAME)
    image = info.InputImageTensorMd(
        name="image", description=f"RGB image, {meta.input_size[0]}x{meta.input_size[1]}, "
        f"{meta.resize} resize, normalised (x - mean) / std",
        norm_mean=[float(v) for v in meta.mean], norm_std=[float(v) for v in meta.std],
        color_space_type=fb.ColorSpaceType.RGB, tensor_type=wu.get_input_tensor_types(data)[0])
    image.tensor_name = in_names[0]
    groups = []
    if meta.outputs == "nms":
        outs = info.DetectionOutputTensorsMd(data, label_files=[labels]).output_mds
        by_tensor = {md.tensor_name: md for md in outs}
        outs = [by_tensor[n] for n in out_names]
        groups = [info.TensorGroupMd(name="detection_result", tensor_names=[md.name for md in outs[:3]])]
    else:
        outs = []
        for n in out_names:
            kind, _, lvl = n.partition("_p")
            text = _RAW_DESCRIPTIONS.get(kind, "Model output {lvl}").format(lvl=lvl or n)
            md = info.TensorMd(name=n, description=text, associated_files=[labels] if kind == "class" else None)
            md.tensor_name = n
            outs.append(md)
    sub = fb.SubGraphMetadataT()
    sub.inputTensorMetadata = [image.create_metadata()]
    sub.outputTensorMetadata = [md.create_metadata() for md in outs]
    if groups:
        sub.outputTensorGroups = [g.create_metadata() for g in groups]
    model = info.GeneralMd(
        name=f"edgedet {meta.model or 'EfficientDet'} {meta.target}".strip(), version=f"edgedet {__version__}",
        description=_describe(meta), author=AUTHOR, licenses=meta.extra.get("license", LICENSE)).create_metadata()
    model.subgraphMetadata = [sub]
    own = fb.AssociatedFileT()
    own.name, own.type = META_NAME, fb.AssociatedFileType.DESCRIPTIONS
    own.description = "edgedet metadata (JSON): anchors, resize, quantization, hashes, baseline mAP"
    model.associatedFiles = [own]
    b = flatbuffers.Builder(0)
    b.Finish(model.Pack(b), metadata.MetadataPopulator.METADATA_FILE_IDENTIFIER)
    return bytes(b.Output())


def write_tflite_metadata(path: str, meta: ModelMeta, log=print) -> bool:
    """Replace ``path`` (converted model bytes, nothing appended) by the model with standard
    metadata and both associated files, atomically. Returns False (and writes the edgedet zip
    only) where mediapipe is not installed."""
    mods = mediapipe_metadata()
    if mods is None:
        log(f"note: {path}: standard TFLite metadata (MediaPipe, Task Library) needs mediapipe: {INSTALL_HINT}")
        embed_tflite(path, meta)
        return False
    from edgedet.errors import ModelFileError

    with open(path, "rb") as f:
        data = f.read()
    from edgedet.files import atomic_path

    # The populator edits a file in place; give it a sibling copy (with the permissions any
    # other artifact gets, not mkstemp's owner-only ones) and rename it over `path` when done
    # (its in-memory variant leaves a temp file to a finaliser).
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
            pop = mods[0].MetadataPopulator.with_model_file(tmp)
            pop.load_metadata_buffer(build_metadata(data, meta, mods))
            pop.load_associated_file_buffers({
                LABELS_NAME: ("\n".join(meta.labels) + "\n").encode(),
                META_NAME: meta.to_json().encode(),
            })
            pop.populate()
    except (ValueError, KeyError, IndexError) as exc:
        raise ModelFileError(f"{path}: cannot write TFLite metadata ({exc})") from exc
    return True


def metadata_json(path: str) -> dict | None:
    """The standard metadata of ``path`` as MediaPipe's displayer renders it (for tests and
    ``info``-style tooling; needs mediapipe), or ``None`` when the file has none."""
    mods = mediapipe_metadata()
    if mods is None:
        return None
    with open(path, "rb") as f:
        data = f.read()
    try:
        buf = mods[0].get_metadata_buffer(data)
    except ValueError:
        return None
    if buf is None:
        return None
    fb = mods[3]
    m = fb.ModelMetadataT.InitFromObj(fb.ModelMetadata.GetRootAsModelMetadata(buf, 0))
    return json.loads(json.dumps(m, default=_plain))


def _plain(o):
    if isinstance(o, bytes):
        return o.decode()
    return o.tolist() if hasattr(o, "tolist") else vars(o)
