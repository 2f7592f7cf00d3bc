"""Tissue detection on a low pyramid level, so whole-image detection skips the glass around the tissue.

A pixel of the mask is tissue when its colour is saturated and absorbs light (H&E stains do; glass is
white and grey, out-of-slide padding is white) and is not black (scanner borders). A closing then an
opening (box structuring elements, numpy only) bridge the pale gaps inside tissue and drop dust.
:func:`detect_tissue` builds the mask; :func:`select_tiles` keeps the planned tiles that hold tissue
within a margin, which is what every whole-image detection (``detect``, ``batch``) runs on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

Region = tuple[int, int, int, int]  # x, y, width, height in level-0 pixels

#: Level-0 pixels per mask pixel we aim at (4 µm at MIDOG's 0.25 µm/px: a nucleus is about one mask pixel).
MASK_DOWNSAMPLE = 16
#: The mask's longer side is kept at or below this (a 100 000 px slide gets a coarser mask, not a bigger one).
MAX_MASK_SIDE = 4096
#: HSV saturation ((max - min) / max) from which a pixel is stained.
MIN_SATURATION = 0.07
#: Mean optical density (-log10 of transmitted light) from which a pixel absorbs light.
MIN_OPTICAL_DENSITY = 0.05
#: A pixel whose brightest channel is below this is a black border or pen, not tissue.
MAX_DARK = 25
#: Radii (mask pixels) of the closing, then the opening, of the clean-up.
CLOSE_RADIUS = 2
OPEN_RADIUS = 1
#: A tile is kept when tissue lies within this many level-0 px of it (a mitosis at the tissue's edge).
TILE_MARGIN = 64
#: Rows of the chosen level read at once (bounds the memory of a strip-only or single-level slide).
_CHUNK_PIXELS = 8_000_000


class TissueSlide(Protocol):
    """What tissue detection needs of a slide (``midog_viewer.io.Slide`` has it)."""

    width: int
    height: int
    levels: list[Any]
    downsamples: list[float]

    def read_region(self, x: int, y: int, w: int, h: int, level: int = 0) -> np.ndarray: ...


@dataclass
class TissueMask:
    """``mask`` (H, W) bool over the whole slide; one mask pixel covers ``scale`` (x, y) level-0 pixels."""

    mask: np.ndarray
    scale: tuple[float, float]

    @property
    def fraction(self) -> float:
        """Share of the slide's area that is tissue (0..1)."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    def bounding_box(self) -> Region | None:
        """Level-0 (x, y, w, h) around all tissue, or None when there is none."""
        rows, cols = np.flatnonzero(self.mask.any(axis=1)), np.flatnonzero(self.mask.any(axis=0))
        if not len(rows):
            return None
        sx, sy = self.scale
        x0, y0 = int(cols[0] * sx), int(rows[0] * sy)
        return (x0, y0, int(np.ceil((cols[-1] + 1) * sx)) - x0, int(np.ceil((rows[-1] + 1) * sy)) - y0)

    def holds_tissue(self, tiles: list[Region], margin: int = TILE_MARGIN) -> np.ndarray:
        """For each level-0 tile, whether tissue lies inside it or within ``margin`` px of it (bool array)."""
        height, width = self.mask.shape
        summed = np.zeros((height + 1, width + 1), np.int64)
        summed[1:, 1:] = self.mask.cumsum(0).cumsum(1)
        sx, sy = self.scale
        boxes = np.asarray(tiles, np.float64).reshape(-1, 4)
        x0 = np.clip(np.floor((boxes[:, 0] - margin) / sx), 0, width).astype(np.int64)
        y0 = np.clip(np.floor((boxes[:, 1] - margin) / sy), 0, height).astype(np.int64)
        x1 = np.clip(np.ceil((boxes[:, 0] + boxes[:, 2] + margin) / sx), 0, width).astype(np.int64)
        y1 = np.clip(np.ceil((boxes[:, 1] + boxes[:, 3] + margin) / sy), 0, height).astype(np.int64)
        inside = summed[y1, x1] - summed[y0, x1] - summed[y1, x0] + summed[y0, x0]
        return inside > 0


def tissue_pixels(rgb: np.ndarray) -> np.ndarray:
    """The raw (uncleaned) tissue test on an (H, W, 3) uint8 or float RGB image: stained, absorbing, not black."""
    rgb = np.asarray(rgb, np.float32)
    brightest = rgb.max(axis=2)
    saturation = (brightest - rgb.min(axis=2)) / np.maximum(brightest, 1.0)
    density = -np.log10((rgb.mean(axis=2) + 1.0) / 256.0)
    return (saturation >= MIN_SATURATION) & (density >= MIN_OPTICAL_DENSITY) & (brightest >= MAX_DARK)


def _box_sum(mask: np.ndarray, radius: int) -> np.ndarray:
    """Per pixel, how many pixels of the (2r+1)² box around it are set (outside the image counts 0)."""
    size = 2 * radius + 1
    padded = np.pad(mask.astype(np.int32), radius)
    summed = np.zeros((padded.shape[0] + 1, padded.shape[1] + 1), np.int32)
    summed[1:, 1:] = padded.cumsum(0).cumsum(1)
    return summed[size:, size:] - summed[:-size, size:] - summed[size:, :-size] + summed[:-size, :-size]


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    return mask if radius <= 0 else _box_sum(mask, radius) > 0


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    return mask if radius <= 0 else _box_sum(~mask, radius) == 0


def clean_mask(mask: np.ndarray, close_radius: int = CLOSE_RADIUS, open_radius: int = OPEN_RADIUS) -> np.ndarray:
    """Closing (bridge pale gaps inside tissue) then opening (drop specks of dust); the border counts as tissue
    for the erosion of the closing, so tissue touching the image edge is not eaten away."""
    closed = ~_dilate(~_dilate(mask, close_radius), close_radius)
    return _dilate(_erode(closed, open_radius), open_radius)


def _pick_level(slide: TissueSlide, downsample: float) -> int:
    """The coarsest level that is still at least as fine as ``downsample``."""
    fine_enough = [i for i, d in enumerate(slide.downsamples) if d <= downsample * 1.01]
    return max(fine_enough, key=lambda i: slide.downsamples[i]) if fine_enough else 0


def _block_mean(rgb: np.ndarray, by: int, bx: int) -> np.ndarray:
    """Average ``by`` × ``bx`` blocks (the last partial blocks are averaged over what they hold)."""
    h, w = rgb.shape[:2]
    ph, pw = -h % by, -w % bx
    data = rgb.astype(np.float32)
    if ph or pw:  # pad with the edge, so partial blocks are not pulled towards white or black
        data = np.pad(data, ((0, ph), (0, pw), (0, 0)), mode="edge")
    return data.reshape((h + ph) // by, by, (w + pw) // bx, bx, 3).mean(axis=(1, 3))


def detect_tissue(slide: TissueSlide, downsample: float | None = None) -> TissueMask:
    """The tissue mask of the whole slide, from the pyramid level nearest ``downsample`` (default: about
    :data:`MASK_DOWNSAMPLE`, coarser for huge slides), read in row chunks and averaged down to the mask."""
    target = downsample or max(MASK_DOWNSAMPLE, max(slide.width, slide.height) / MAX_MASK_SIDE)
    level = _pick_level(slide, target)
    level_h, level_w = (int(n) for n in slide.levels[level].shape[:2])
    step = max(1, int(round(target / slide.downsamples[level])))
    rows = max(step, (_CHUNK_PIXELS // max(level_w, 1)) // step * step)
    parts = []
    for y in range(0, level_h, rows):
        chunk = slide.read_region(0, y, level_w, min(rows, level_h - y), level)
        parts.append(tissue_pixels(_block_mean(chunk, step, step)))
    raw = np.concatenate(parts) if parts else np.zeros((0, 0), bool)
    scale = (slide.width / max(raw.shape[1], 1), slide.height / max(raw.shape[0], 1))
    return TissueMask(clean_mask(raw), scale)


def tissue_filter(tissue: TissueMask, margin: int = TILE_MARGIN) -> Callable[[list[Region]], list[int]]:
    """A tile filter for :meth:`Detector.iter_detect`: planned tiles → indices of those holding tissue.

    A mask without any tissue keeps every tile: an image the colour test does not recognise (unstained,
    faint or not H&E) is searched as a whole rather than silently skipped.
    """

    def keep(tiles: list[Region]) -> list[int]:
        if not tissue.mask.any():
            return list(range(len(tiles)))
        return np.flatnonzero(tissue.holds_tissue(tiles, margin)).tolist() if tiles else []

    return keep


@dataclass
class TileSelection:
    """The tiles kept (their indices into the planned list, and the tiles) and the slide's tissue fraction."""

    indices: list[int]
    tiles: list[Region]
    tissue_fraction: float
    planned: int


def select_tiles(
    slide: TissueSlide, tiles: list[Region], margin: int = TILE_MARGIN, tissue: TissueMask | None = None
) -> TileSelection:
    """Keep the planned ``tiles`` that hold tissue within ``margin`` level-0 px; give the tissue fraction too."""
    tissue = tissue if tissue is not None else detect_tissue(slide)
    indices = tissue_filter(tissue, margin)(tiles)
    return TileSelection(indices, [tiles[i] for i in indices], tissue.fraction, len(tiles))
