"""Cut a level-0 region into overlapping tiles and merge the tiles' detections with class-wise NMS."""

from __future__ import annotations

import torch

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
