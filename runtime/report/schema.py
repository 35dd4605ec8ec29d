"""The ``report.json`` schema (a JSON-Schema subset) and a small validator for it.

The schema is documented for humans in ``docs/report_schema.md``; this dict is what tests and
``edgedet validate`` check a report against before writing it. The validator understands only
the keywords used here (``type``, ``properties``, ``required``, ``items``, ``enum``,
``additionalProperties``, ``minimum``, ``maximum``), so no jsonschema dependency is needed on a device.
"""
from __future__ import annotations

from edgedet.runtime.report.recommend import RECOMMENDATION_SCHEMA

REPORT_SCHEMA_VERSION = 1

STATUS_ICONS = {"pass": "✅", "miss": "❎", "fail": "❌"}

_NUM = {"type": ["number", "null"]}
_INT = {"type": ["integer", "null"]}
_STR = {"type": ["string", "null"]}
_METRICS = {
    "type": ["object", "null"],
    "required": ["AP", "AP50", "AP75", "APs", "APm", "APl"],
    "properties": {k: _NUM for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")},
}
_SUMMARY = {
    "type": ["object", "null"],
    "required": ["n", "p50", "p90", "p99"],
    "properties": {"n": {"type": "integer", "minimum": 0}, "mean": _NUM, "std": _NUM, "min": _NUM,
                   "max": _NUM, "p50": _NUM, "p90": _NUM, "p99": _NUM},
}
_LATENCY = {
    "type": ["object", "null"],
    "required": ["init_ms", "first_run_ms", "invoke", "end_to_end", "pre", "post"],
    "properties": {
        "init_ms": _NUM, "first_run_ms": _NUM, "invoke": _SUMMARY, "end_to_end": _SUMMARY,
        "pre": _SUMMARY, "post": _SUMMARY,
        "samples_ms": {"type": ["object", "null"], "properties": {
            k: {"type": "array", "items": {"type": "number"}} for k in ("invoke", "end_to_end", "pre", "post")}},
    },
}
_CURVE = {"type": ["array", "null"], "items": {"type": "number", "minimum": 0, "maximum": 1}}
_PER_CLASS_ROW = {
    "type": "object",
    "required": ["ap", "ap50", "delta_ap", "num_gt"],
    "properties": {"ap": _NUM, "ap50": _NUM, "delta_ap": _NUM, "delta_ap50": _NUM, "num_gt": _INT,
                   "pr_iou50": _CURVE, "pr_mean": _CURVE},
}
_LAYER_TABLE = {
    "type": ["object", "null"],
    "required": ["source", "columns", "rows"],
    "properties": {
        "source": {"type": "string"},
        "kind": {"type": "string", "enum": ["diagnosis", "tensors", "outputs"]},
        "columns": {"type": "array", "items": {"type": "string"}},
        "rows": {"type": "array", "items": {"type": "object"}},
        "note": _STR,
    },
}
_MODEL = {
    "type": "object",
    "required": ["name", "path", "role", "status", "status_icon", "reasons", "error", "format", "target",
                 "file_size_bytes", "macs", "metrics", "delta", "per_class", "latency", "gmacs_per_s",
                 "provenance", "layer_errors"],
    "properties": {
        "name": {"type": "string"},
        "path": {"type": "string"},
        "role": {"type": "string", "enum": ["baseline", "twin", "candidate"]},
        "vs_twin": {"type": "object", "properties": {"twin": {"type": "string"}, "delta": _METRICS}},
        "status": {"type": "string", "enum": list(STATUS_ICONS)},
        "status_icon": {"type": "string", "enum": list(STATUS_ICONS.values())},
        "reasons": {"type": "array", "items": {"type": "string"}},
        "error": _STR,
        "format": {"type": "string", "enum": ["tflite", "onnx", "openvino", "keras", "unknown"]},
        "target": _STR,
        "quantization": {"type": ["object", "null"]},
        "file_size_bytes": _INT,
        "sha256": _STR,
        "macs": _INT,
        "nms": {"type": ["object", "null"]},
        "rank_ms": _NUM,
        "metrics": _METRICS,
        "delta": _METRICS,
        "per_class": {"type": ["object", "null"], "additionalProperties": _PER_CLASS_ROW},
        "latency": _LATENCY,
        "gmacs_per_s": _NUM,
        "provenance": {
            "type": "object",
            "required": ["backend", "backend_version", "delegate", "threads"],
            "properties": {"backend": _STR, "backend_version": _STR, "delegate": _STR, "threads": _INT,
                           "device": _STR},
        },
        "layer_errors": _LAYER_TABLE,
    },
}

REPORT_SCHEMA: dict = {
    "type": "object",
    "required": ["schema_version", "tool", "created", "dataset", "thresholds", "host", "baseline",
                 "recall_thresholds", "models", "summary"],
    "properties": {
        "schema_version": {"type": "integer", "enum": [REPORT_SCHEMA_VERSION]},
        "tool": {"type": "object", "required": ["name", "version"],
                 "properties": {"name": {"type": "string"}, "version": {"type": "string"}, "command": _STR}},
        "created": {"type": "string"},
        "dataset": {
            "type": "object",
            "required": ["path", "split", "num_images", "class_names"],
            "properties": {"path": {"type": "string"}, "split": {"type": "string"},
                           "num_images": {"type": "integer", "minimum": 0},
                           "class_names": {"type": "array", "items": {"type": "string"}},
                           "fingerprint": _STR, "plot": _STR},
        },
        "thresholds": {
            "type": "object",
            "required": ["device", "max_ap_drop", "latency_budget_ms", "latency_metric"],
            "properties": {"device": _STR, "device_file": _STR, "device_arch": _STR, "max_ap_drop": _NUM, "latency_budget_ms": _NUM,
                           "latency_metric": {"type": "string"}},
        },
        "host": {
            "type": "object",
            "required": ["cpu_model", "num_cpus", "os", "python", "throttled"],
            "properties": {"cpu_model": _STR, "num_cpus": _INT, "os": _STR, "python": _STR, "machine": _STR,
                           "cpu_features": {"type": "array", "items": {"type": "string"}}, "emulation": _STR,
                           "numpy": _STR,
                           "throttled": {"type": ["boolean", "null"]}, "throttle_detail": _STR},
        },
        "baseline": _STR,
        "recall_thresholds": {"type": "array", "items": {"type": "number"}},
        "models": {"type": "array", "items": _MODEL},
        "recommendation": RECOMMENDATION_SCHEMA,
        "summary": {
            "type": "object",
            "required": ["passed", "missed", "failed", "exit_code"],
            "properties": {k: {"type": "integer", "minimum": 0} for k in ("passed", "missed", "failed", "exit_code")},
        },
    },
}

_TYPES = {
    "object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
    "integer": int, "number": (int, float),
}


def _is_type(value, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False  # bool is an int subclass in Python, never a number in JSON
    return isinstance(value, _TYPES[name])


def check_schema(obj, schema: dict = REPORT_SCHEMA, path: str = "$") -> list[str]:
    """Validate ``obj`` against a JSON-Schema subset.

    Returns:
        Error messages like ``"$.models[0].status: 'ok' not in ['pass', 'miss', 'fail']"``;
        empty when valid.
    """
    errors: list[str] = []
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        if not any(_is_type(obj, t) for t in types):
            return [f"{path}: expected {'/'.join(types)}, got {type(obj).__name__}"]
    if obj is None:
        return errors
    if "enum" in schema and obj not in schema["enum"]:
        errors.append(f"{path}: {obj!r} not in {schema['enum']}")
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        if "minimum" in schema and obj < schema["minimum"] - 1e-9:
            errors.append(f"{path}: {obj} < minimum {schema['minimum']}")
        if "maximum" in schema and obj > schema["maximum"] + 1e-9:
            errors.append(f"{path}: {obj} > maximum {schema['maximum']}")
    if isinstance(obj, dict):
        for key in schema.get("required", ()):
            if key not in obj:
                errors.append(f"{path}: missing required key {key!r}")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, value in obj.items():
            if key in props:
                errors += check_schema(value, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                errors += check_schema(value, extra, f"{path}[{key!r}]")
            elif extra is False:
                errors.append(f"{path}: unexpected key {key!r}")
    if isinstance(obj, list) and "items" in schema:
        for i, item in enumerate(obj):
            errors += check_schema(item, schema["items"], f"{path}[{i}]")
    return errors
