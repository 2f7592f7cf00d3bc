"""Cut a level-0 region into overlapping tiles and merge the tiles' detections with class-wise NMS."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou

from midog_viewer.detect.detections import Detections
from midog_viewer.detect.nms import batched_nms

Region = tuple[int, int, int, int]  # x, y, width, height in level-0 pixels


def _starts(start: int, length: int, tile: int, step: int) -> list[int]:
    """Tile origins along one axis: every ``step``, the last one flush with the end; one short tile if it fits."""
    if length <= tile:
        return [start]
    origins = list(range(start, start + length - tile, step))
    origins.append(start + length - tile)
    return sorted(set(origins))


def plan_tiles(region: Region, tile_size: int = 512, overlap: int = 64) -> list[Region]:
    """Tiles of at most ``tile_size`` covering ``region``, neighbours sharing ``overlap`` px (or more at the end).

    Tiles stay inside the region, so a region smaller than a tile gives one smaller tile, and the last row and
    column end exactly at the region's edge.
    """
    if overlap < 0 or overlap >= tile_size:
        raise ValueError("overlap must be in [0, tile_size)")
    x, y, width, height = region
    step = tile_size - overlap
    return [
        (tx, ty, min(tile_size, width), min(tile_size, height))
        for ty in _starts(y, height, tile_size, step)
        for tx in _starts(x, width, tile_size, step)
    ]


def _axis_cores(starts: list[int], size: int, begin: int, end: int) -> dict[int, tuple[float, float]]:
    """Split [begin, end) at the middle of each overlap: start → (low, high) of the part that tile owns."""
    bounds = [float(begin)] + [(s + prev + size) / 2.0 for prev, s in zip(starts, starts[1:])] + [float("inf")]
    return {s: (bounds[i], bounds[i + 1]) for i, s in enumerate(starts)}


def tile_cores(tiles: list[Region], region: Region) -> list[tuple[float, float, float, float]]:
    """The part of the region each tile owns (x0, y0, x1, y1; x1/y1 exclusive): overlaps are cut in the middle.

    Keeping only the detections whose centre lies in their tile's core drops the truncated copy of an object
    cut by a tile border, which NMS alone would keep when the two copies overlap less than the IoU threshold.
    With 64 px of overlap, every object up to 64 px wide is whole in the tile that owns its centre.
    """
    x, y, width, height = region
    xs = sorted({t[0] for t in tiles})
    ys = sorted({t[1] for t in tiles})
    x_cores = _axis_cores(xs, tiles[0][2], x, x + width)
    y_cores = _axis_cores(ys, tiles[0][3], y, y + height)
    return [(x_cores[tx][0], y_cores[ty][0], x_cores[tx][1], y_cores[ty][1]) for tx, ty, _, _ in tiles]


def keep_centres_in(detections: Detections, core: tuple[float, float, float, float]) -> Detections:
    """The detections whose box centre lies in ``core`` (x0, y0, x1, y1; lower bounds inclusive)."""
    x0, y0, x1, y1 = core
    cx = (detections.boxes[:, 0] + detections.boxes[:, 2]) / 2
    cy = (detections.boxes[:, 1] + detections.boxes[:, 3]) / 2
    return detections.select((cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1))


def merge_detections(detections: Detections, iou_threshold: float = 0.5) -> Detections:
    """Suppress duplicates (IoU > threshold, same class), e.g. one mitosis seen by two tiles; sorted by score."""
    if len(detections) == 0:
        return detections
    keep = batched_nms(
        torch.from_numpy(detections.boxes),
        torch.from_numpy(detections.scores),
        torch.from_numpy(detections.labels),
        iou_threshold,
    )
    return detections.select(keep.numpy())


def drop_duplicates_of(new: Detections, earlier: Detections, iou_threshold: float = 0.5) -> Detections:
    """``new`` without the detections that duplicate one of ``earlier`` (same class, IoU > threshold).

    Used between batches: what was already handed out is never taken back, so later batches defer to it.
    """
    if len(new) == 0 or len(earlier) == 0:
        return new
    overlaps = box_iou(torch.from_numpy(new.boxes), torch.from_numpy(earlier.boxes)).numpy()
    overlaps[new.labels[:, None] != earlier.labels[None, :]] = 0.0
    return new.select(overlaps.max(axis=1) <= iou_threshold)


def sort_by_score(detections: Detections) -> Detections:
    """Highest score first (stable)."""
    return detections.select(np.argsort(-detections.scores, kind="stable"))
