"""``convert --target openvino-int8 --max-drop P``: NNCF accuracy control judged by our COCO AP.

NNCF's ``quantize_with_accuracy_control`` quantizes the float IR, measures it with the
validation function, and reverts the quantizers it ranks most harmful to float until the drop is
within ``max_drop``. Its validation function here is the runtime's COCO evaluator on the
``--val-data`` split, through the same :class:`edgedet.runtime.detector.Detector` decode and NMS
``edgedet validate`` uses, so ``max_drop`` is in the report's AP points.
"""
from __future__ import annotations

import time

import numpy as np

from edgedet.errors import ConfigError, DataError, ToolchainError
from edgedet.runtime.backends.base import Backend, TensorSpec

RANKING_IMAGES = 8
# Ops NNCF may revert to float, one validation each. Its default is unbounded: a tight budget on
# lite0@256 was still reverting after 8 minutes and 504 validations on 2 cores, the drop swinging
# 0.15-0.57. The TFLite search stops at MAX_EVALUATIONS in the same way.
MAX_REVERTS = 40


class _CompiledBackend(Backend):
    """A Detector backend over an OpenVINO ``CompiledModel`` (what NNCF hands the validation function)."""

    name = "openvino"

    def __init__(self, compiled):
        self.compiled, self.version, self.device, self.delegate, self.threads = compiled, "", "CPU", None, None
        self.request = compiled.create_infer_request()
        self.inputs = [TensorSpec(p.get_any_name(), tuple(p.get_partial_shape().to_shape()), np.dtype(np.float32))
                       for p in compiled.inputs]
        self.outputs = [TensorSpec(p.get_any_name(), tuple(p.get_partial_shape().to_shape()), np.dtype(np.float32))
                        for p in compiled.outputs]

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        self.request.infer({0: x})
        return [self.request.get_output_tensor(i).data for i in range(len(self.outputs))]


def nncf_accuracy_control(ctx, ov_model, meta) -> tuple[object, dict]:
    """Quantize ``ov_model`` (float IR) within ``ctx.max_drop`` AP points on ``ctx.val_data``.

    Returns:
        ``(quantized model, quantization block)``; the block's ``budget`` holds the float and
        int8 AP, the drop and the time (NNCF keeps its own log of reverted layers).
    """
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    from edgedet.quiet import quiet_nncf

    quiet_nncf(nncf)
    from edgedet.quantize.diagnose import eval_samples
    from edgedet.runtime.detector import Detector
    from edgedet.runtime.report.evaluate import EVAL_POSTPROCESS, coco_evaluate

    labels = list(meta.labels)
    samples = eval_samples(ctx.val_data, ctx.val_split, None, labels)
    if not samples:
        raise DataError(f"{ctx.val_data}: no '{ctx.val_split}' images to measure the AP drop on (--val-data)")
    cal = ctx.calibration("NCHW" if meta.layout == "NCHW" else "NHWC")
    arrays = list(cal.arrays())
    seen, calls = [], [0]

    def validate(compiled, items) -> tuple[float, None]:
        det = Detector(_CompiledBackend(compiled), meta, **EVAL_POSTPROCESS)
        items = list(items)
        ap = 100.0 * float(coco_evaluate(items, [det.detect(s.image_path) for s in items], labels)["AP"])
        calls[0] += 1
        if len(items) == len(samples):  # NNCF also scores subsets while ranking; keep whole-split results
            seen.append(round(ap, 4))
            ctx.log(f"  nncf validation {calls[0]:3d}: AP {ap:.3f} on the whole split")
        return ap, None

    def model_input(sample) -> np.ndarray:  # (1, S, S, 3): for NNCF's output-difference ranking
        from edgedet.runtime.preprocess import letterbox, load_image, normalize

        size = tuple(meta.input_size)
        x = normalize(letterbox(load_image(sample.image_path), size, meta.mean)[0], meta.mean, meta.std)
        return x[None].astype(np.float32)

    start = time.perf_counter()
    try:
        q = nncf.quantize_with_accuracy_control(
            ov_model, nncf.Dataset(arrays), nncf.Dataset(samples, model_input), validate, max_drop=float(ctx.max_drop),
            drop_type=nncf.DropType.ABSOLUTE, preset=nncf.QuantizationPreset.MIXED, subset_size=len(arrays),
            # NNCF ranks every quantized op (D0: 340) by the metric on a subset of images; its default
            # subset is the whole split, which on 2 cores is hours. RANKING_IMAGES keeps it ~1 s per op.
            advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                ranking_subset_size=min(RANKING_IMAGES, len(samples)), max_num_iterations=MAX_REVERTS))
    except Exception as exc:  # noqa: BLE001
        raise ToolchainError(f"NNCF accuracy control failed: {str(exc).splitlines()[0][:300]}") from exc
    budget = {"max_drop": ctx.max_drop, "float_AP": seen[0] if seen else None, "int8_AP": seen[1] if len(seen) > 1 else None,
              "AP": seen[-1] if seen else None, "evaluations": calls[0], "whole_split_evaluations": len(seen), "seconds": round(time.perf_counter() - start, 1),
              "data": str(ctx.val_data), "split": ctx.val_split, "images": len(samples), "tool": "nncf.quantize_with_accuracy_control"}
    if budget["float_AP"] is not None and budget["AP"] is not None:
        budget["drop"] = round(budget["float_AP"] - budget["AP"], 4)
        budget["met"] = budget["drop"] <= ctx.max_drop
        if not budget["met"]:  # out of reverts (MAX_REVERTS), or no float set recovers it
            raise ConfigError(f"--max-drop {ctx.max_drop}: NNCF's best model still drops {budget['drop']:.3f} AP after "
                              f"{calls[0]} validations (at most {MAX_REVERTS} ops reverted); raise the budget or use QAT")
    return q, {"method": "nncf-ptq", "tool": f"nncf {nncf.__version__}", "preset": "mixed",
               "calibration": cal.describe(), "budget": budget}
