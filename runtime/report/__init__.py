"""Host-side validation and reporting: COCO evaluation, accuracy-drop + latency reports, bench.

Runs on a workstation or on the device itself (no TensorFlow needed for file models); the on-device
runtime (``edgedet.runtime``) never imports this package.
"""
