"""Geometry the review overlay needs, free of Qt and napari so it is tested and reused on its own.

Boxes are level-0 ``(x1, y1, x2, y2)`` pixels; napari wants ``(row, col)`` points and a size, and the
viewer's camera speaks world units (µm when the slide's mpp is known). These helpers convert between them.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

Region = tuple[int, int, int, int]


def boxes_to_points(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres as ``(row, col)`` and the side of a square that covers each box, both in level-0 px."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    centres = np.empty((len(boxes), 2), dtype=np.float32)
    centres[:, 0] = (boxes[:, 1] + boxes[:, 3]) / 2
    centres[:, 1] = (boxes[:, 0] + boxes[:, 2]) / 2
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    return centres, sides


#: The field a step to the next box shows: µm of slide per screen pixel (about a 40x objective's view on a
#: 0.25 µm/px scan), whatever the scan's own magnification, so a mitosis looks the same size on every slide.
STEP_UM_PER_SCREEN_PX = 0.25


def step_zoom(mpp: float | None, scale: float) -> float:
    """Camera zoom (screen px per world unit) that shows :data:`STEP_UM_PER_SCREEN_PX`; ``scale`` is the image
    layer's world units per level-0 pixel. Without a pixel size: one screen pixel per level-0 pixel."""
    screen_px_per_level0_px = mpp / STEP_UM_PER_SCREEN_PX if mpp else 1.0
    return screen_px_per_level0_px / float(scale)


def view_region(
    center: Iterable[float],
    zoom: float,
    canvas_size: tuple[int, int],
    scale: tuple[float, float],
    image_size: tuple[int, int],
    translate: tuple[float, float] = (0.0, 0.0),
) -> Region | None:
    """The level-0 region ``(x, y, w, h)`` on screen, clipped to the image; None when nothing shows.

    ``center`` is the camera centre in world units (its last two entries are row, col), ``zoom`` screen
    pixels per world unit, ``canvas_size`` ``(height, width)`` in screen pixels, ``scale`` and
    ``translate`` the image layer's world units per level-0 pixel and offset, ``image_size``
    ``(width, height)`` of level 0.
    """
    row_c, col_c = list(center)[-2:]
    half_h = canvas_size[0] / zoom / 2
    half_w = canvas_size[1] / zoom / 2
    y0 = (row_c - half_h - translate[0]) / scale[0]
    y1 = (row_c + half_h - translate[0]) / scale[0]
    x0 = (col_c - half_w - translate[1]) / scale[1]
    x1 = (col_c + half_w - translate[1]) / scale[1]
    width, height = image_size
    x0, x1 = max(0, int(np.floor(x0))), min(width, int(np.ceil(x1)))
    y0, y1 = max(0, int(np.floor(y0))), min(height, int(np.ceil(y1)))
    if x1 <= x0 or y1 <= y0:
        return None
    return (x0, y0, x1 - x0, y1 - y0)


def boxes_in_region(boxes: np.ndarray, region: Region) -> np.ndarray:
    """Mask of boxes whose centre lies inside ``region``: how counts attribute a figure to a field."""
    x, y, w, h = region
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    return (cx >= x) & (cx < x + w) & (cy >= y) & (cy < y + h)


def box_at(boxes: np.ndarray, x: float, y: float) -> int | None:
    """Index of the box under level-0 point ``(x, y)``; the smallest wins when boxes overlap."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    inside = (boxes[:, 0] <= x) & (x <= boxes[:, 2]) & (boxes[:, 1] <= y) & (y <= boxes[:, 3])
    hits = np.flatnonzero(inside)
    if len(hits) == 0:
        return None
    areas = (boxes[hits, 2] - boxes[hits, 0]) * (boxes[hits, 3] - boxes[hits, 1])
    return int(hits[np.argmin(areas)])


def reading_order(boxes: np.ndarray, band: float = 512.0) -> np.ndarray:
    """Indices of boxes in reading order: bands of ``band`` px top to bottom, left to right inside a band.

    Next/previous walk this order, so the reviewer sweeps the slide the way one reads a page instead
    of jumping by score.
    """
    centres, _ = boxes_to_points(boxes)
    return np.lexsort((centres[:, 1], np.floor(centres[:, 0] / band)))


def step_in_order(order: np.ndarray, candidates: np.ndarray, current: int | None, forward: bool) -> int | None:
    """The next (or previous) index in ``order`` after ``current`` whose ``candidates`` flag is set.

    Wraps around once; None when no candidate is left.
    """
    flagged = order[np.asarray(candidates, dtype=bool)[order]]
    if len(flagged) == 0:
        return None
    if current is None:
        return int(flagged[0] if forward else flagged[-1])
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    here = position[current]
    flagged_positions = position[flagged]
    if forward:
        later = flagged[flagged_positions > here]
        return int(later[0] if len(later) else flagged[0])
    earlier = flagged[flagged_positions < here]
    return int(earlier[-1] if len(earlier) else flagged[-1])


class DoneRegions:
    """Which parts of a slide one model has already analysed, on a grid of square cells.

    The viewer asks for the bounding region of the cells not yet done, so panning back over ground already
    covered by the same model (same key: model path and settings) is not recomputed.
    """

    def __init__(self, cell: int = 512) -> None:
        self.cell = cell
        self._done: dict[str, set[tuple[int, int]]] = {}

    def _cells(self, region: Region) -> list[tuple[int, int]]:
        x, y, w, h = region
        c = self.cell
        return [
            (cx, cy)
            for cy in range(y // c, (y + h - 1) // c + 1)
            for cx in range(x // c, (x + w - 1) // c + 1)
        ]

    def missing(self, key: str, region: Region, image_size: tuple[int, int]) -> Region | None:
        """The smallest region, aligned to cells and clipped to the image, covering what is not done yet."""
        done = self._done.get(key, set())
        todo = [cell for cell in self._cells(region) if cell not in done]
        if not todo:
            return None
        c = self.cell
        xs = [cx for cx, _ in todo]
        ys = [cy for _, cy in todo]
        x0, y0 = min(xs) * c, min(ys) * c
        x1 = min(image_size[0], (max(xs) + 1) * c)
        y1 = min(image_size[1], (max(ys) + 1) * c)
        return (x0, y0, x1 - x0, y1 - y0)

    def mark_done(self, key: str, region: Region, image_size: tuple[int, int]) -> None:
        """Record the cells of ``region`` as analysed; a cell cut by the image edge counts when covered to the edge."""
        x, y, w, h = region
        c = self.cell
        done = self._done.setdefault(key, set())
        for cx, cy in self._cells(region):
            covers_x = x <= cx * c and (x + w >= (cx + 1) * c or x + w >= image_size[0])
            covers_y = y <= cy * c and (y + h >= (cy + 1) * c or y + h >= image_size[1])
            if covers_x and covers_y:
                done.add((cx, cy))
