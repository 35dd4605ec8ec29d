"""The one result type every backend, evaluator and report uses."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Detections:
    """Detections for one image.

    Attributes:
        boxes: ``(N, 4)`` float32 xyxy in the original image's pixels (letterbox undone).
        scores: ``(N,)`` float32 in [0, 1], sorted descending.
        classes: ``(N,)`` int32 0-based class ids.
        labels: class names indexed by class id (shared, not per detection).
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    labels: tuple[str, ...] = field(default=())

    @classmethod
    def empty(cls, labels=()) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int32), tuple(labels))

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def label(self, i: int) -> str:
        c = int(self.classes[i])
        return self.labels[c] if 0 <= c < len(self.labels) else str(c)

    def to_list(self) -> list[dict]:
        """JSON-friendly list of ``{box, score, class_id, label}``."""
        return [
            {
                "box": [round(float(v), 2) for v in self.boxes[i]],
                "score": round(float(self.scores[i]), 4),
                "class_id": int(self.classes[i]),
                "label": self.label(i),
            }
            for i in range(len(self))
        ]
