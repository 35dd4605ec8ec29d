"""``Detector``: one model file in, :class:`Detections` out, on any backend.

    from edgedet.runtime import Detector
    det = Detector.from_file("lite0_tflite-int8.tflite", device="raspberry-pi-5")
    dets = det.detect("cells.jpg")          # boxes in the image's own pixels
    det.last_timing                          # {"pre": s, "invoke": s, "post": s}

Everything the model needs (labels, input size, normalisation, anchors, output names) comes
from the metadata embedded in the file (:mod:`edgedet.runtime.metadata`). A file without it is
accepted only when labels, image size and normalisation are passed explicitly — except a
standard 4-output detection ``.tflite`` with a uint8 input, which takes pixels as they are.
"""
from __future__ import annotations

import os
import time
from typing import NamedTuple, Sequence

import numpy as np

from edgedet.errors import ConfigError, ModelFileError, did_you_mean
from edgedet.files import model_kind
from edgedet.runtime.anchors import AnchorConfig
from edgedet.runtime.detections import Detections
from edgedet.runtime.metadata import ModelMeta, read_metadata, read_tflite_zip
from edgedet.runtime.postprocess import from_nms_outputs, postprocess, to_original
from edgedet.runtime.preprocess import as_rgb_uint8, load_for_model, opencv, resize_for_model
from edgedet.runtime.outputs import InputPlan, map_nms_outputs, map_raw_outputs

_BACKGROUND = ("???", "background", "__background__", "bg")
# Settings of :meth:`Detector.decode`, all attributes of the detector.
POST_SETTINGS = ("score_threshold", "iou_threshold", "max_detections", "nms", "soft", "sigma", "pre_nms_topk")


class PreparedBatch(NamedTuple):
    """Input of :meth:`Detector.detect_batch`: ``x`` the model input ``(B, h, w, 3)`` (or NCHW),
    ``scales`` ``(scale_y, scale_x)`` and ``sizes`` original ``(H, W)`` per image."""

    x: np.ndarray
    scales: list
    sizes: list


def backend_for(path: str) -> str:
    """Backend kind for a model path, from its suffix."""
    return {"tflite": "litert", "onnx": "onnxruntime", "openvino": "openvino"}[model_kind(path)]


def read_labels(labels) -> list[str] | None:
    """Labels from a list, or a text file with one name per line."""
    if labels is None:
        return None
    if isinstance(labels, (str, os.PathLike)):
        if not os.path.isfile(labels):
            raise ConfigError(f"--labels {labels}: no such file")
        with open(labels, encoding="utf-8") as f:
            return [ln.strip() for ln in f if ln.strip()]
    return [str(x) for x in labels]


class Detector:
    """Runs a detection model file; see :meth:`from_file`.

    Attributes:
        meta: the model's :class:`ModelMeta`.
        backend: the loaded backend (``describe()`` gives backend/version/device/threads).
        score_threshold, iou_threshold, max_detections, nms, soft, sigma, pre_nms_topk:
            post-processing settings, changeable between calls.
        last_timing: seconds of the last :meth:`detect` — ``{"pre", "invoke", "post"}``.
        load_seconds: time spent loading the model.
    """

    def __init__(self, backend, meta: ModelMeta, path: str = "", score_threshold: float = 0.3, iou_threshold: float = 0.5,
                 max_detections: int = 100, nms: str = "class", soft: bool = False, sigma: float = 0.5,
                 pre_nms_topk: int = 5000, raw_pixels: bool = False):
        self.backend, self.meta, self.path = backend, meta, path
        self.score_threshold, self.iou_threshold, self.max_detections = score_threshold, iou_threshold, max_detections
        self.nms, self.soft, self.sigma, self.pre_nms_topk = nms, soft, sigma, pre_nms_topk
        self.labels = tuple(meta.labels)
        self.last_timing = {"pre": 0.0, "invoke": 0.0, "post": 0.0}
        self.last_image_hw: tuple[int, int] | None = None  # original (H, W) of the last detect()
        self.own_metadata = True  # the file carries edgedet metadata (from_file says otherwise)
        self.load_seconds = 0.0
        self.input = InputPlan(backend.inputs[0], meta, raw_pixels=raw_pixels)
        if meta.outputs == "nms":
            self._nms_idx = map_nms_outputs(backend.outputs, path)
            self._nms_checked = False
            if self.labels and self.labels[0].strip().lower() in _BACKGROUND:
                self.labels = self.labels[1:]  # SSD label maps start with a background entry
        else:
            self._nms_idx = None
            self._raw = map_raw_outputs(backend.outputs, meta, self.input.size, path)
            from edgedet.runtime.anchors import generate_anchors  # noqa: PLC0415

            self.anchors = generate_anchors(self.input.size, meta.anchor_config)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_file(cls, path, device: str | None = None, threads: int | None = None, fallback: str | None = None,
                  labels=None, image_size=None, mean=None, std=None, anchor_scale=None, **post) -> "Detector":
        """Load a model file.

        Args:
            path: ``.tflite``, ``.onnx``, OpenVINO ``.xml`` or its folder.
            device: a device profile (a name from ``edgedet devices``, the path of a ``.toml``, or
                a loaded ``DeviceProfile``) or a backend device string ("cpu", "usb:0", "pci:0",
                "nnapi", "GPU", "NPU", "AUTO").
            threads: CPU threads (overrides the profile's).
            fallback: "cpu" to run on CPU when the requested delegate/device is missing, fails, or
                would run nothing (an Edge TPU file not compiled); ``backend.device`` says so.
            labels: list of names or a labels file (required without metadata; overrides the
                file's labels otherwise).
            image_size: int or ``(h, w)``; required for raw-output models without metadata.
            mean, std: pixel-unit normalisation; required for models without metadata
                (except a uint8-input 4-output TFLite, which takes pixels directly).
            anchor_scale: base anchor size in strides; required for raw-output models without
                metadata (EfficientDet D0-D7: 4, Lite0-4: 3), which decode wrongly with the other.
            **post: post-processing settings (score_threshold, iou_threshold, max_detections,
                nms, soft, sigma, pre_nms_topk).

        Raises:
            ModelFileError: unknown suffix, truncated/corrupt file, missing metadata.
            ToolchainError: backend or delegate not installed.
            ConfigError: bad device/profile.
        """
        t0 = time.perf_counter()
        path = os.fspath(path)
        kind = backend_for(path)
        if not os.path.exists(path):
            raise ModelFileError(f"{path}: no such model file")
        device, threads = _resolve_device(device, threads, kind)
        from edgedet.runtime.backends.base import open_backend  # noqa: PLC0415

        backend = open_backend(path, kind, device=device, threads=threads, fallback=fallback)
        meta, raw_pixels, own = _resolve_meta(path, kind, backend, labels, image_size, mean, std, anchor_scale)
        det = cls(backend, meta, path=path, raw_pixels=raw_pixels, **post)
        det.own_metadata = own
        opencv()  # its import (~10 ms) belongs to loading, not to the first image's timings
        det.load_seconds = time.perf_counter() - t0
        return det

    def warmup(self, runs: int = 1) -> float:
        """Invoke on a blank image ``runs`` times (first-run costs: allocation, JIT); returns the first run's seconds."""
        h, w = self.input.size
        blank = np.zeros((1, h, w, 3), np.uint8)
        x = self.input.prepare(blank)
        first = 0.0
        for i in range(max(1, runs)):
            t = time.perf_counter()
            outs = self.backend.run(x)
            del outs
            if i == 0:
                first = time.perf_counter() - t
        return first

    # ------------------------------------------------------------------ running

    def preprocess(self, image) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
        """Image (array or path) -> ``(input tensor, (scale_y, scale_x), original (H, W))``."""
        return prepare_image(image, self.input, self.meta)

    def infer(self, x: np.ndarray, copy: bool = True) -> list[np.ndarray]:
        """Run the backend on a prepared tensor; outputs in the backend's order (copies by default)."""
        outs = self.backend.run(x)
        return [np.array(o) for o in outs] if copy else outs

    def decode(self, outputs: Sequence[np.ndarray], scales, image_hw, index: int = 0, **post) -> Detections:
        """Backend outputs (batch item ``index``) -> :class:`Detections` in original-image pixels.

        ``**post`` overrides the post-processing settings for this call only (e.g. the evaluation's
        low score floor on the same outputs as a deployment-setting decode).
        """
        unknown = set(post) - set(POST_SETTINGS)
        if unknown:
            raise TypeError(f"unknown post-processing settings {sorted(unknown)}; valid: {', '.join(POST_SETTINGS)}")
        p = {k: post.get(k, getattr(self, k)) for k in POST_SETTINGS}
        if self._nms_idx is not None:
            if not self._nms_checked:
                self._check_nms_order(outputs)
            b, c, s, n = (outputs[i] for i in self._nms_idx)
            d = from_nms_outputs(b[index], c[index], s[index], np.reshape(n, (-1,))[index:index + 1], self.input.size,
                                 p["score_threshold"], self.labels)
            k = p["max_detections"]
            d.classes, d.boxes, d.scores = d.classes[:k], d.boxes[:k], d.scores[:k]
        else:
            cls_out, box_out = self._raw.split(outputs, index)
            d = postprocess(cls_out, box_out, self.anchors, class_quant=self._raw.class_quant,
                            box_quant=self._raw.box_quant, labels=self.labels, **p)
        return to_original(d, scales, image_hw)

    def raw_outputs(self, outputs: Sequence[np.ndarray], index: int = 0) -> dict[str, np.ndarray]:
        """Batch item ``index`` of the backend outputs as ``{"class_pL" | "box_pL": float32 (H, W, K)}``,
        dequantised, for comparing files layer by layer; empty for 4-output (NMS) models."""
        if self._nms_idx is not None:
            return {}
        cls_l, box_l = self._raw.split(outputs, index)
        lo = self.meta.anchor_config.min_level
        out = {}
        for prefix, arrays, quant in (("class", cls_l, self._raw.class_quant), ("box", box_l, self._raw.box_quant)):
            for i, a in enumerate(arrays):
                a = np.asarray(a)
                q = quant[i] if quant else None
                if q is not None and np.issubdtype(a.dtype, np.integer):
                    a = (a.astype(np.float32) - q[1]) * q[0]
                out[f"{prefix}_p{lo + i}"] = a.astype(np.float32)
        return out

    def _check_nms_order(self, outputs) -> None:
        # Files converted by TF2 name their outputs StatefulPartitionedCall:N in an order that
        # differs between versions; classes are whole numbers and scores are not, so the first
        # output with a fractional value settles which is which.
        # Only rows below the count are written; the padding past it is uninitialised memory
        # (garbage such as -2e31 or NaN in dynamic-range files), which says nothing about the order.
        bi, ci, si, ni = self._nms_idx
        counts = np.reshape(np.asarray(outputs[ni], np.float64), (-1,))
        c, s = _written_rows(outputs[ci], counts), _written_rows(outputs[si], counts)
        c_frac, s_frac = bool(np.any(c != np.round(c))), bool(np.any(s != np.round(s)))
        if c_frac != s_frac:
            if c_frac:
                self._nms_idx = (bi, si, ci, ni)
            self._nms_checked = True

    def detect(self, image) -> Detections:
        """Detect objects in one image (``(H, W, 3)`` uint8 RGB array or a path)."""
        t0 = time.perf_counter()
        x, scales, hw = self.preprocess(image)
        t1 = time.perf_counter()
        outs = self.backend.run(x)
        t2 = time.perf_counter()
        dets = self.decode(outs, scales, hw)
        del outs  # release zero-copy views before the next invoke
        t3 = time.perf_counter()
        self.last_timing = {"pre": t1 - t0, "invoke": t2 - t1, "post": t3 - t2}
        self.last_image_hw = hw
        return dets

    __call__ = detect

    def preprocess_batch(self, images: Sequence) -> PreparedBatch:
        """Images (arrays or paths) -> one :class:`PreparedBatch`. Safe to call on another thread
        (it reads the detector, never changes it), e.g. to prepare the next batch during an invoke."""
        prepped = [self.preprocess(im) for im in images]
        x = np.concatenate([p[0] for p in prepped]) if prepped else np.zeros((0,), np.float32)
        return PreparedBatch(x, [p[1] for p in prepped], [p[2] for p in prepped])

    def detect_batch(self, images) -> list[Detections]:
        """Detect in several images (arrays or paths, or a :meth:`preprocess_batch` result): one
        invoke for the whole batch when the model's batch dimension is dynamic, else one per image.
        ``last_timing`` sums the batch's seconds."""
        t0 = time.perf_counter()
        batch = images if isinstance(images, PreparedBatch) else self.preprocess_batch(list(images))
        n = len(batch.sizes)
        step = n if self.input.batch == -1 else 1
        dets: list[Detections] = []
        timing = {"pre": time.perf_counter() - t0, "invoke": 0.0, "post": 0.0}
        for start in range(0, n, max(step, 1)):
            t1 = time.perf_counter()
            outs = self.backend.run(batch.x[start:start + step])
            t2 = time.perf_counter()
            dets += [self.decode(outs, batch.scales[start + i], batch.sizes[start + i], index=i)
                     for i in range(min(step, n - start))]
            del outs  # release zero-copy views before the next invoke
            timing["invoke"] += t2 - t1
            timing["post"] += time.perf_counter() - t2
        if n:
            self.last_timing = timing
        return dets

    def describe(self) -> dict:
        """Provenance: backend, version, device, delegate, threads, model path, target."""
        d = self.backend.describe()
        d.update(model=self.path, target=self.meta.target, input_size=list(self.input.size), outputs=self.meta.outputs)
        return d

    def __repr__(self) -> str:
        b = self.backend
        return f"Detector({self.path!r}, backend={b.name}, device={b.device}, input={self.input.size}, classes={len(self.labels)})"


# ---------------------------------------------------------------------------- helpers


def prepare_image(image, plan: InputPlan, meta: ModelMeta) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
    """Image (array or path) -> ``(input tensor (1, h, w, 3) or NCHW, (scale_y, scale_x), original (H, W))``:
    letterbox or stretch per ``meta``, then ``plan``'s quantisation and layout. A JPEG path is
    decoded already reduced when it is large (:func:`~edgedet.runtime.preprocess.load_for_model`)."""
    if isinstance(image, (str, os.PathLike)):
        img, hw = load_for_model(image, plan.size, meta.resize)
        canvas, scales = resize_for_model(img, plan.size, meta.resize, meta.mean, source_hw=hw)
        return plan.prepare(canvas[None]), scales, hw
    img = as_rgb_uint8(image)
    canvas, scales = resize_for_model(img, plan.size, meta.resize, meta.mean)
    return plan.prepare(canvas[None]), scales, img.shape[:2]


def _resolve_device(device, threads, kind):
    """A device profile (its name, the path of its ``.toml``, or a loaded ``DeviceProfile``) ->
    (backend device string, threads); other strings pass through."""
    if not device:
        return None, threads
    if hasattr(device, "device_for"):  # a DeviceProfile already loaded (validate, bench)
        return device.device_for(kind), threads if threads else device.threads
    device = os.fspath(device)
    try:
        from edgedet.devices import list_profiles, load_profile  # noqa: PLC0415
    except ImportError:
        return device, threads
    if device.endswith(".toml") or "/" in device or os.sep in device:
        prof = load_profile(device)  # its own one-line error for a missing file or a bad field
        return prof.device_for(kind), threads if threads else prof.threads
    if device not in list_profiles():
        hint = did_you_mean(device, list_profiles(), cutoff=0.8)
        if hint:  # a mistyped profile name, not a backend's device string
            raise ConfigError(f"--device {device}: no such device profile{hint}; see `edgedet devices`")
        return device, threads
    prof = load_profile(device)
    return prof.device_for(kind), threads if threads else prof.threads


def _written_rows(a, counts: np.ndarray) -> np.ndarray:
    """The values of a ``(B, K)`` NMS output in the first ``count`` rows of each batch item, flat."""
    a = np.asarray(a)
    if a.ndim != 2:
        return np.zeros((0,), np.float32)
    counts = np.nan_to_num(counts, nan=0.0, posinf=0.0, neginf=0.0)
    parts = [a[b, :int(np.clip(counts[b], 0, a.shape[1]))] for b in range(min(len(counts), len(a)))]
    return np.concatenate(parts) if parts else np.zeros((0,), a.dtype)


def _resolve_meta(path, kind, backend, labels, image_size, mean, std, anchor_scale=None) -> tuple[ModelMeta, bool, bool]:
    """``(metadata, raw pixels, the file carries edgedet metadata)``: the file's, completed or
    overridden by explicit arguments."""
    meta = read_metadata(path)
    file_labels = None
    if kind == "litert" and meta is None:
        from edgedet.runtime.tflite_standard import read_standard  # noqa: PLC0415

        standard = read_standard(path)  # labels and normalisation of a standard-metadata file
        file_labels = read_tflite_zip(path, standard.label_file if standard else None)[1]
        if file_labels is None:
            _check_truncated_zip(path)
        float_input = not np.issubdtype(backend.inputs[0].dtype, np.integer)
        if standard and standard.mean and mean is None and std is None and float_input:
            mean, std = list(standard.mean), list(standard.std)
    user_labels = read_labels(labels)
    if meta is not None:
        if user_labels:
            if meta.labels and len(user_labels) != len(meta.labels):
                raise ConfigError(f"{labels}: {len(user_labels)} names, but {path} has {len(meta.labels)} classes")
            meta.labels = user_labels
        return meta, False, True
    outs = backend.outputs
    is_nms = len(outs) == 4 and kind == "litert" and any(len(o.shape) == 3 and o.shape[-1] == 4 for o in outs)
    names = user_labels or file_labels
    inp = backend.inputs[0]
    if is_nms:
        if not names:
            raise ModelFileError(f"{path}: detection model without labels; pass --labels FILE")
        h, w = (inp.shape[1], inp.shape[2]) if inp.shape[-1] == 3 else (inp.shape[2], inp.shape[3])
        raw_pixels = np.issubdtype(inp.dtype, np.integer) and mean is None
        if not raw_pixels and (mean is None or std is None):
            raise ModelFileError(f"{path}: float-input model without edgedet metadata; pass --mean and --std")
        meta = ModelMeta(labels=names, input_size=(int(h), int(w)), outputs="nms", resize="stretch",
                         mean=_triple(mean, 0.0), std=_triple(std, 1.0), target="tflite-nms")
        return meta, raw_pixels, False
    missing = [n for n, v in (("--labels", names), ("--image-size", image_size), ("--mean", mean), ("--std", std),
                              ("--anchor-scale", anchor_scale)) if v is None]
    if missing:
        raise ModelFileError(f"{path}: no edgedet metadata in this file; pass {', '.join(missing)} to run it anyway")
    size = (int(image_size), int(image_size)) if np.isscalar(image_size) else tuple(int(s) for s in image_size)
    layout = "NCHW" if len(inp.shape) == 4 and inp.shape[1] == 3 and inp.shape[-1] != 3 else "NHWC"
    anchors = AnchorConfig(anchor_scale=float(anchor_scale)).to_dict()
    return ModelMeta(labels=names, input_size=size, layout=layout, mean=_triple(mean, 0.0), std=_triple(std, 1.0),
                     anchors=anchors), False, False


def _triple(v, default) -> tuple[float, float, float]:
    if v is None:
        v = default
    if np.isscalar(v):
        return (float(v),) * 3
    v = [float(x) for x in v]
    if len(v) not in (1, 3):
        raise ConfigError(f"--mean and --std take 1 value or 3 (one per RGB channel), got {len(v)}")
    return tuple(v * 3) if len(v) == 1 else tuple(v)  # type: ignore[return-value]


def _check_truncated_zip(path: str) -> None:
    """Our metadata zip starts with a local header for edgedet.json; finding that header without
    a readable zip means the file was cut off (a copy interrupted mid-way)."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - (1 << 20)))
        tail = f.read()
    if b"PK\x03\x04" in tail and b"edgedet.json" in tail:
        raise ModelFileError(f"{path}: truncated model file (its metadata block is cut off)")
