"""Macenko stain normalisation, fitted once per slide region (not per tile, so tiles agree at their seams).

The target is a reference H&E stain matrix shipped in ``resources/stain/macenko_reference.json``, fitted once
on a real H&E carcinoma tile (see the file's ``made_with``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from midog_viewer._resources import resource_path
from midog_viewer.errors import ModelError

#: Optical-density vectors of haematoxylin, eosin and DAB (rows, unit length; Ruifrok & Johnston 2001, as
#: scikit-image's ``rgb_from_hed``): the fixed stain basis that stain augmentation moves amounts along.
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
RGB_FROM_HED = RGB_FROM_HED / np.linalg.norm(RGB_FROM_HED, axis=1, keepdims=True)
#: Background intensity, angular percentile and optical-density threshold of Macenko et al. (2009).
LIGHT_INTENSITY = 240.0
ANGLE_PERCENTILE = 1.0
OD_THRESHOLD = 0.15
#: Fewer tissue pixels than this and the stains cannot be estimated: the region is left as it is.
MIN_TISSUE_PIXELS = 500
#: The region's pixels are subsampled to at most this many for the fit.
MAX_FIT_PIXELS = 262_144

REFERENCE_PATH = resource_path("stain", "macenko_reference.json")


@dataclass(frozen=True)
class StainFit:
    """Stain vectors (2, 3: haematoxylin then eosin, unit optical-density vectors) and their 99th-percentile amounts."""

    stain_matrix: np.ndarray
    max_concentrations: np.ndarray

    def to_dict(self) -> dict[str, list]:
        return {
            "stain_matrix": self.stain_matrix.tolist(),
            "max_concentrations": self.max_concentrations.tolist(),
        }


def _optical_density(rgb: np.ndarray) -> np.ndarray:
    return -np.log((rgb.reshape(-1, 3).astype(np.float64) + 1.0) / LIGHT_INTENSITY)


def fit_stains(rgb: np.ndarray) -> StainFit | None:
    """Estimate the H&E stain vectors of an (H, W, 3) uint8 RGB image; None when it has too little tissue."""
    od = _optical_density(rgb)
    tissue = od[np.all(od > OD_THRESHOLD, axis=1)]
    if tissue.shape[0] < MIN_TISSUE_PIXELS:
        return None
    _, eigenvectors = np.linalg.eigh(np.cov(tissue, rowvar=False))
    plane = eigenvectors[:, 1:3]
    plane = plane * np.where(plane[0] < 0, -1.0, 1.0)  # point both axes into positive red optical density
    projected = tissue @ plane
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    low, high = np.percentile(angles, [ANGLE_PERCENTILE, 100 - ANGLE_PERCENTILE])
    first = plane @ np.array([np.cos(low), np.sin(low)])
    second = plane @ np.array([np.cos(high), np.sin(high)])
    # Haematoxylin absorbs more red than eosin does: it comes first.
    stains = np.array([first, second] if first[0] > second[0] else [second, first])
    stains = stains / np.linalg.norm(stains, axis=1, keepdims=True)
    concentrations = np.linalg.lstsq(stains.T, tissue.T, rcond=None)[0]
    max_concentrations = np.percentile(concentrations, 99, axis=1)
    if not np.all(np.isfinite(stains)) or np.any(max_concentrations <= 0):
        return None
    return StainFit(stains, max_concentrations)


def load_reference(path: Path = REFERENCE_PATH) -> StainFit:
    """The shipped target stains."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return StainFit(np.asarray(data["stain_matrix"], float), np.asarray(data["max_concentrations"], float))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot read the reference stain file {path}: {exc}.") from exc


class MacenkoNormalizer:
    """Maps a region's stains onto the reference: fit once with :meth:`fit`, then :meth:`transform` every tile."""

    def __init__(self, reference: StainFit | None = None) -> None:
        self.reference = reference if reference is not None else load_reference()
        self.source: StainFit | None = None

    def fit(self, rgb: np.ndarray) -> bool:
        """Estimate the source stains from pixels of the whole region; False (tiles pass unchanged) without tissue."""
        pixels = rgb.reshape(-1, 3)
        if pixels.shape[0] > MAX_FIT_PIXELS:  # an even subsample estimates the same stains, much faster
            pixels = pixels[:: pixels.shape[0] // MAX_FIT_PIXELS + 1]
        self.source = fit_stains(pixels.reshape(-1, 1, 3))
        return self.source is not None

    def od_matrix(self) -> np.ndarray | None:
        """The 3×3 map of optical densities that :meth:`transform` applies; None when the fit found no tissue.

        Concentrations are the least-squares solution ``pinv(S_src.T) @ od``, rescaled to the reference's
        99th percentiles and re-coloured with the reference stains: one linear map per pixel, so tiles can be
        normalised on the GPU as well.
        """
        if self.source is None:
            return None
        unmix = np.linalg.pinv(self.source.stain_matrix.T)  # (2, 3)
        scale = self.reference.max_concentrations / self.source.max_concentrations
        return self.reference.stain_matrix.T @ (scale[:, None] * unmix)

    def transform(self, rgb: np.ndarray) -> np.ndarray:
        """The (H, W, 3) uint8 tile with the reference stains; unchanged when the fit found no tissue."""
        matrix = self.od_matrix()
        if matrix is None:
            return rgb
        normalized = LIGHT_INTENSITY * np.exp(-(_optical_density(rgb) @ matrix.T))
        return np.clip(normalized, 0, 255).reshape(rgb.shape).astype(np.uint8)
