"""Tile plans cover any region exactly, and NMS merges the same object seen by two tiles."""

from __future__ import annotations

import numpy as np
import pytest

from midog_viewer.detect.detections import Detections
from midog_viewer.detect.tiling import (
    drop_duplicates_of,
    keep_centres_in,
    merge_detections,
    plan_tiles,
    sort_by_score,
    tile_cores,
)


def _covered(tiles, region):
    x, y, w, h = region
    mask = np.zeros((h, w), bool)
    for tx, ty, tw, th in tiles:
        assert x <= tx and y <= ty and tx + tw <= x + w and ty + th <= y + h
        mask[ty - y : ty - y + th, tx - x : tx - x + tw] = True
    return mask.all()


@pytest.mark.parametrize(
    "region", [(0, 0, 1920, 1080), (100, 37, 512, 512), (5, 9, 300, 120), (0, 0, 513, 2000), (7, 7, 1, 1)]
)
def test_tiles_cover_the_region_and_stay_inside(region):
    tiles = plan_tiles(region, 512, 64)
    assert _covered(tiles, region)
    assert all(t[2] <= 512 and t[3] <= 512 for t in tiles)


def test_neighbouring_tiles_overlap_by_at_least_the_overlap():
    tiles = plan_tiles((0, 0, 1920, 1080), 512, 64)
    xs = sorted({t[0] for t in tiles})
    assert xs[0] == 0 and xs[-1] + 512 == 1920
    assert all(b - a <= 512 - 64 for a, b in zip(xs, xs[1:]))
    assert len(tiles) == len(xs) * len({t[1] for t in tiles}) == 15


def test_region_smaller_than_a_tile_is_one_smaller_tile():
    assert plan_tiles((10, 20, 300, 200)) == [(10, 20, 300, 200)]


def test_bad_overlap_is_refused():
    with pytest.raises(ValueError):
        plan_tiles((0, 0, 100, 100), 512, 512)


def test_merge_keeps_one_box_per_object_and_class():
    boxes = [[100, 100, 150, 150], [101, 99, 151, 149], [100, 100, 150, 150], [300, 300, 340, 340]]
    detections = Detections(boxes, [0.9, 0.8, 0.7, 0.6], [0, 0, 1, 0])
    merged = merge_detections(detections, 0.5)
    assert merged.scores.tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert merged.labels.tolist() == [0, 1, 0]
    assert len(merge_detections(Detections(), 0.5)) == 0


def test_detections_helpers():
    a = Detections([[0, 0, 10, 10]], [0.9], [0])
    b = Detections([[5, 5, 20, 20]], [0.3], [1])
    both = a + b
    assert len(both) == 2 and both.label_names() == ["mitotic figure", "hard negative"]
    assert len(both.filter_score(0.5)) == 1
    assert both.translated(100, 10).boxes[0].tolist() == [100, 10, 110, 20]
    assert both.boxes.dtype == np.float32 and both.labels.dtype == np.int64
    assert both.to_records()[1] == {"x1": 5.0, "y1": 5.0, "x2": 20.0, "y2": 20.0, "score": pytest.approx(0.3),
                                    "label": "hard negative"}
    assert len(Detections.concatenate([])) == 0
    with pytest.raises(ValueError):
        Detections([[0, 0, 1, 1]], [0.5, 0.6], [0])


def test_tile_cores_partition_the_region():
    region = (10, 20, 1500, 700)
    tiles = plan_tiles(region, 512, 64)
    cores = tile_cores(tiles, region)
    owners = np.zeros((700, 1500), int)
    for x0, y0, x1, y1 in cores:
        xs = np.arange(10, 1510)
        ys = np.arange(20, 720)
        owners[np.ix_((ys >= y0) & (ys < y1), (xs >= x0) & (xs < x1))] += 1
    assert (owners == 1).all()
    for (tx, ty, tw, th), (x0, y0, x1, y1) in zip(tiles, cores):
        # every core keeps at least 32 px (half the overlap) away from interior tile borders
        assert x0 >= tx and (x1 == float("inf") or x1 <= tx + tw - 32)
        assert y0 >= ty and (y1 == float("inf") or y1 <= ty + th - 32)


def test_keep_centres_in_core():
    detections = Detections([[0, 0, 10, 10], [460, 0, 490, 10]], [0.9, 0.8], [0, 0])  # centres x 5 and 475
    assert len(keep_centres_in(detections, (0, 0, 480, float("inf")))) == 2
    assert keep_centres_in(detections, (480, 0, float("inf"), float("inf"))).boxes.tolist() == []
    assert keep_centres_in(detections, (0, 0, 480, 5)).boxes.tolist() == []


def test_later_batches_defer_to_earlier_ones():
    earlier = Detections([[100, 100, 150, 150]], [0.6], [0])
    new = Detections([[102, 101, 152, 151], [102, 101, 152, 151], [400, 400, 450, 450]], [0.9, 0.8, 0.7], [0, 1, 0])
    kept = drop_duplicates_of(new, earlier, 0.5)
    assert kept.scores.tolist() == pytest.approx([0.8, 0.7])  # the same-class duplicate goes, the other class stays
    assert len(drop_duplicates_of(new, Detections(), 0.5)) == 3
    assert sort_by_score(new + earlier).scores.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6])
