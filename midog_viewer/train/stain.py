"""Macenko stain normalisation for training, fitted once per image (not per patch).

Patches of one image then share one colour transform, as tiles of one region do at inference
(:mod:`midog_viewer.detect.stain`), so training sees what the detector will be shown.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from midog_viewer.train.patches import RegionSource
from midog_viewer.train.sources import LabelledImage

#: Patches (around labelled objects) the stain matrix of a file-backed image is fitted on.
FIT_PATCHES = 8


class ImageStain:
    """Callable ``(image, pixels) -> pixels`` that normalises with a transform fitted once per image."""

    def __init__(self, patch_size: int = 512) -> None:
        self.patch_size = patch_size
        self._fitted: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
        self._source = RegionSource()

    def __call__(self, image: LabelledImage, pixels: np.ndarray) -> np.ndarray:
        transform = self._fitted.get(image.key)
        if transform is None:
            transform = self._fitted[image.key] = _fit(self._sample(image))
        return transform(pixels)

    def _sample(self, image: LabelledImage) -> np.ndarray:
        """The whole image if in memory, else patches around up to ``FIT_PATCHES`` labelled objects."""
        if image.pixels is not None:
            return image.pixels
        half = self.patch_size // 2
        step = max(1, len(image.boxes) // FIT_PATCHES)
        patches = [
            self._source.read(image, int((x1 + x2) / 2) - half, int((y1 + y2) / 2) - half, self.patch_size, self.patch_size)
            for x1, y1, x2, y2 in image.boxes[::step][:FIT_PATCHES]
        ]
        return np.concatenate(patches, axis=0)


def _fit(pixels: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    from midog_viewer.detect.stain import MacenkoNormalizer

    normaliser = MacenkoNormalizer()
    normaliser.fit(pixels)  # without enough tissue it leaves pixels unchanged, as at inference
    return normaliser.transform
