"""The in-memory form every annotation reader returns and every writer takes: boxes per image.

Readers parse a whole file into :class:`ImageAnnotations` before anything touches the review store,
which is what makes imports atomic: a malformed file raises
:class:`~midog_viewer.errors.AnnotationFormatError` while the store is still untouched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np

from midog_viewer.errors import AnnotationFormatError

#: MIDOG 2021 scanners (../shared/data/README.md): Hamamatsu XR and S360 for 001–100, Aperio CS2 for
#: 101–150 and Leica GT450 for 151–200.
_MIDOG_2021_NAME = re.compile(r"^(\d{3})\.tiff?$", re.IGNORECASE)
_DRIVE = re.compile(r"^[A-Za-z]:")


#: No slide is wider than this many level-0 pixels (2.5 m at 0.25 µm/px); a coordinate beyond it is corrupt.
MAX_COORDINATE_PX = 10_000_000


def check_image_name(name: str, where: str) -> str:
    """An image name from an annotation file: a relative file name, never a way out of the image folder."""
    parts = PurePosixPath(name).parts
    if not name.strip() or "\0" in name or name.startswith(("/", "\\")) or _DRIVE.match(name) or ".." in parts or ".." in name.split("\\"):
        raise AnnotationFormatError(
            f"{where} names the image {name!r}; image names must be file names inside the image folder, "
            "without '/' at the start or '..'."
        )
    return name


def check_coordinates(image: "ImageAnnotations", where: str) -> None:
    """Refuse coordinates no slide can have (e.g. 1e300), naming the first such box."""
    boxes = np.asarray(image.boxes, dtype=np.float64).reshape(-1, 4)
    bad = np.flatnonzero(~np.all(np.abs(boxes) <= MAX_COORDINATE_PX, axis=1))
    if bad.size:
        box = ", ".join(f"{v:g}" for v in boxes[bad[0]])
        raise AnnotationFormatError(
            f"{where}: {bad.size} boxes of image {image.name!r} lie beyond ±{MAX_COORDINATE_PX:,} px "
            f"(first: [{box}]); the file is damaged."
        )


def outside_image(boxes: np.ndarray, width: int | None, height: int | None) -> np.ndarray:
    """Which boxes lie wholly outside an image of the given size (none when the size is unknown)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not width or not height:
        return np.zeros(len(boxes), dtype=bool)
    return (boxes[:, 2] < 0) | (boxes[:, 3] < 0) | (boxes[:, 0] > width) | (boxes[:, 1] > height)


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
    #: The subtype per box where the file gives one (1 atypical, 0 normal, None: not said); empty: none at all.
    atypical: list[int | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def subtypes(self) -> list[int | None]:
        """One subtype (1, 0 or None) per box."""
        return list(self.atypical) if len(self.atypical) == len(self.labels) else [None] * len(self.labels)


_SUBTYPE_WORDS = {"1": 1, "true": 1, "yes": 1, "atypical": 1, "0": 0, "false": 0, "no": 0, "normal": 0, "": None}


def parse_subtype(value: object, where: str) -> int | None:
    """A file's atypical flag (bool, 0/1, "true"/"false", "atypical"/"normal", empty or null) as 1, 0 or None."""
    if value is None:
        return None
    if isinstance(value, bool) or (isinstance(value, (int, float)) and value in (0, 1)):
        return int(value)
    if isinstance(value, str) and value.strip().lower() in _SUBTYPE_WORDS:
        return _SUBTYPE_WORDS[value.strip().lower()]
    raise AnnotationFormatError(f"{where}: atypical is {value!r}; use 1/0, true/false or atypical/normal.")


def point_box(x: float, y: float, size_px: float) -> list[float]:
    """A square of side ``size_px`` centred on a point (how centre-point labels become boxes)."""
    half = size_px / 2.0
    return [x - half, y - half, x + half, y + half]


def finish(images: dict[str, ImageAnnotations], boxes: dict[str, list[list[float]]]) -> list[ImageAnnotations]:
    """Turn per-image box lists into arrays, keeping the images' order."""
    for name, image in images.items():
        image.boxes = np.asarray(boxes.get(name, []), dtype=np.float64).reshape(-1, 4)
    return list(images.values())
