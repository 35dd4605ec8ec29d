"""numpy-only runtime: backends, pre/post-processing, anchors, NMS, metrics, reports.

Never imports TensorFlow (a test checks this in a subprocess). Heavy backends load lazily.
"""
from edgedet.runtime.anchors import AnchorConfig, Anchors, generate_anchors
from edgedet.runtime.detections import Detections
from edgedet.runtime.metadata import ModelMeta, read_metadata

__all__ = ["AnchorConfig", "Anchors", "Detections", "ModelMeta", "generate_anchors", "read_metadata"]


def __getattr__(name):  # lazy: Detector pulls in backends only when used
    if name == "Detector":
        from edgedet.runtime.detector import Detector

        return Detector
    raise AttributeError(name)
