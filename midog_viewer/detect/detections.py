"""Detections in level-0 slide pixels: boxes, scores, labels and the class names the labels index."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from midog_viewer.classes import CLASS_NAMES


@dataclass
class Detections:
    """``boxes`` float32 (N, 4) xyxy level-0 px, ``scores`` float32 (N,), ``labels`` int64 (N,) into ``class_names``."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    class_names: tuple[str, ...] = CLASS_NAMES

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.class_names = tuple(self.class_names)
        if not (len(self.boxes) == len(self.scores) == len(self.labels)):
            raise ValueError("boxes, scores and labels must have the same length")

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def label_names(self) -> list[str]:
        """The class name of each detection."""
        return [self.class_names[int(label)] for label in self.labels]

    def select(self, index: np.ndarray) -> Detections:
        """The detections at ``index`` (a boolean mask or integer indices)."""
        return Detections(self.boxes[index], self.scores[index], self.labels[index], self.class_names)

    def filter_score(self, threshold: float) -> Detections:
        """Only the detections scoring at least ``threshold``."""
        return self.select(self.scores >= threshold)

    def translated(self, dx: float, dy: float) -> Detections:
        """The same detections shifted by (dx, dy) pixels (tile → slide coordinates)."""
        shift = np.array([dx, dy, dx, dy], dtype=np.float32)
        return Detections(self.boxes + shift, self.scores, self.labels, self.class_names)

    @classmethod
    def concatenate(cls, parts: Sequence[Detections], class_names: Sequence[str] | None = None) -> Detections:
        """All detections of ``parts`` in order; ``class_names`` is used when ``parts`` is empty."""
        names = tuple(parts[0].class_names if parts else (class_names or CLASS_NAMES))
        if any(p.class_names != names for p in parts):
            raise ValueError("cannot concatenate detections with different class names")
        if not parts:
            return cls(class_names=names)
        return cls(
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.labels for p in parts]),
            names,
        )

    def __add__(self, other: Detections) -> Detections:
        return Detections.concatenate([self, other])

    def to_records(self) -> list[dict[str, float | str]]:
        """One dict per detection: x1, y1, x2, y2, score, label (class name), as the CLI writes them."""
        names = self.label_names()
        return [
            {
                "x1": float(box[0]),
                "y1": float(box[1]),
                "x2": float(box[2]),
                "y2": float(box[3]),
                "score": float(score),
                "label": name,
            }
            for box, score, name in zip(self.boxes, self.scores, names)
        ]
