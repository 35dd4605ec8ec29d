"""``--from model.onnx``: ONNX -> tf_keras through onnx2tf, then on to any TFLite target.

onnx2tf rewrites NCHW graphs to NHWC; an NHWC-input ONNX (ours, exported by tf2onnx) keeps
its input layout via ``keep_nwc_or_nhwc_or_ndhwc_input_names``. onnx2tf validates its
transposes on sample images it downloads from GitHub; there is no network here, so we hand
it a deterministic sample (calibration-like smooth noise) instead.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import sys
import tempfile

import numpy as np

from edgedet.errors import ToolchainError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _sample_images() -> np.ndarray:
    """``(20, 128, 128, 3)`` float32 in [0, 1]: smooth deterministic noise, image-like enough."""
    rng = np.random.default_rng(0)
    low = rng.random((20, 8, 8, 3), dtype=np.float32)
    return np.repeat(np.repeat(low, 16, axis=1), 16, axis=2).astype(np.float32)


def _first_error(text: str) -> str:
    lines = [_ANSI.sub("", ln).strip() for ln in text.splitlines()]
    for ln in lines:
        if "ERROR" in ln or "Error" in ln:
            return ln
    return next((ln for ln in reversed(lines) if ln), "")


def import_onnx(path: str, meta=None):
    """Convert an ONNX model to a tf_keras Functional model.

    Args:
        path: ``.onnx`` file with one image input.
        meta: its :class:`ModelMeta` (used for the input layout); optional.

    Returns:
        tf_keras model with an NHWC float32 input ``(1, H, W, 3)``.

    Raises:
        ToolchainError: onnx2tf cannot convert it (one line with onnx2tf's reason).
    """
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    try:
        import onnx
        import onnx2tf
    except ImportError as exc:
        raise ToolchainError("--from ONNX needs onnx2tf: pip install onnx2tf onnx-graphsurgeon sng4onnx") from exc
    mod = sys.modules.get("onnx2tf.onnx2tf")
    if mod is not None and hasattr(mod, "download_test_image_data"):
        mod.download_test_image_data = _sample_images
    try:
        g = onnx.load(path, load_external_data=False).graph
    except Exception as exc:  # noqa: BLE001
        raise ToolchainError(f"--from {path}: not a readable ONNX model ({type(exc).__name__}: {str(exc)[:200]})") from exc
    inputs = [i.name for i in g.input]
    kw = {}
    dims = [d.dim_value for d in g.input[0].type.tensor_type.shape.dim] if inputs else []
    nhwc = len(dims) == 4 and dims[3] == 3 and dims[1] != 3
    if nhwc:
        kw["keep_nwc_or_nhwc_or_ndhwc_input_names"] = inputs[:1]
    if len(dims) == 4 and (dims[0] in (0, -1)):
        kw["batch_size"] = 1
    buf = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="edgedet-onnx2tf-") as out:
        # onnx2tf saves its simplified graph back over the file it was given: give it a copy.
        work = _private_copy(path, g, out)
        try:
            with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
                model = onnx2tf.convert(
                    input_onnx_file_path=work, output_folder_path=out, disable_model_save=True,
                    non_verbose=True, verbosity="error", **kw,
                )
        except (Exception, SystemExit) as exc:  # onnx2tf calls sys.exit(1) on failure
            reason = _first_error(buf.getvalue()) or (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            raise ToolchainError(f"onnx2tf could not convert {path}: {reason[:300]} (check the opset/ops, or export NHWC with static shapes)") from None
    if model is None:
        raise ToolchainError(f"onnx2tf could not convert {path}: it returned no model")
    _track_captured_variables(model)
    return model


def _private_copy(path: str, graph, folder: str) -> str:
    """Copy ``path`` and any external-data files its initializers name into ``folder``."""
    import onnx  # noqa: PLC0415

    src_dir = os.path.dirname(os.path.abspath(path))
    for t in graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            loc = next((e.value for e in t.external_data if e.key == "location"), None)
            if loc and not os.path.isfile(os.path.join(src_dir, loc)):
                raise ToolchainError(f"--from {path}: its external data file {loc} is missing beside it")
            if loc and not os.path.exists(os.path.join(folder, loc)):
                os.makedirs(os.path.dirname(os.path.join(folder, loc)) or folder, exist_ok=True)
                shutil.copyfile(os.path.join(src_dir, loc), os.path.join(folder, loc))
    work = os.path.join(folder, "source-" + os.path.basename(path))
    shutil.copyfile(path, work)
    return work


def _track_captured_variables(model) -> None:
    """Make the variables onnx2tf's op layers create (e.g. depthwise kernels) part of ``model.variables``.

    They are captured by the model's call but tracked by no layer, so saving a function of the
    model (what the TFLite converter does to keep the signature and output names) fails with
    "untracked resource". Assigning them to a model attribute lets Keras track them.
    """
    import tensorflow as tf

    shape = [1, *[int(d) for d in model.inputs[0].shape[1:]]]
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(tf.TensorSpec(shape, tf.float32))
    known = {id(v) for v in model.variables}
    extra = [v for v in fn.graph.variables if id(v) not in known]
    if extra:
        model.onnx2tf_variables = extra
