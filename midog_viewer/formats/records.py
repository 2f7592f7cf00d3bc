"""The in-memory form every annotation reader returns and every writer takes: boxes per image.

Readers parse a whole file into :class:`ImageAnnotations` before anything touches the review store,
which is what makes imports atomic: a malformed file raises
:class:`~midog_viewer.errors.AnnotationFormatError` while the store is still untouched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

#: MIDOG 2021 scanners (../shared/data/README.md): Hamamatsu XR and S360 for 001–100, Aperio CS2 for
#: 101–150 and Leica GT450 for 151–200.
_MIDOG_2021_NAME = re.compile(r"^(\d{3})\.tiff?$", re.IGNORECASE)


def midog_2021_mpp(file_name: str) -> float | None:
    """µm per pixel of a MIDOG 2021 image by its file name (001–100: 0.23, 101–200: 0.25), else None."""
    match = _MIDOG_2021_NAME.match(file_name)
    if not match:
        return None
    number = int(match.group(1))
    if 1 <= number <= 100:
        return 0.23
    if 101 <= number <= 200:
        return 0.25
    return None


@dataclass
class ImageAnnotations:
    """One image's labelled boxes: level-0 pixels, xyxy, labels already canonical class names."""

    name: str
    width: int | None = None
    height: int | None = None
    mpp: float | None = None
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), dtype=np.float64))
    labels: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)


def point_box(x: float, y: float, size_px: float) -> list[float]:
    """A square of side ``size_px`` centred on a point (how centre-point labels become boxes)."""
    half = size_px / 2.0
    return [x - half, y - half, x + half, y + half]


def finish(images: dict[str, ImageAnnotations], boxes: dict[str, list[list[float]]]) -> list[ImageAnnotations]:
    """Turn per-image box lists into arrays, keeping the images' order."""
    for name, image in images.items():
        image.boxes = np.asarray(boxes.get(name, []), dtype=np.float64).reshape(-1, 4)
    return list(images.values())
