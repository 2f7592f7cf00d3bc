"""The overlay's geometry: boxes to points, the region on screen, picking, order and done regions."""

from __future__ import annotations

import numpy as np

from midog_viewer.review.navigation import (
    DoneRegions,
    box_at,
    boxes_in_region,
    boxes_to_points,
    reading_order,
    step_in_order,
    view_region,
)


def test_boxes_become_row_col_centres_and_covering_sides():
    centres, sides = boxes_to_points(np.array([[10, 20, 60, 70], [0, 0, 40, 20]]))
    np.testing.assert_allclose(centres, [[45, 35], [10, 20]])
    np.testing.assert_allclose(sides, [50, 40])


def test_view_region_accounts_for_layer_scale_and_clips_to_the_image():
    # 0.25 µm/px: a 400 × 200 screen at zoom 2 screen px per µm shows 200 × 100 µm = 800 × 400 px.
    region = view_region((0, 100.0, 200.0), 2.0, (200, 400), (0.25, 0.25), (10_000, 10_000))
    assert region == (400, 200, 800, 400)
    clipped = view_region((0.0, 0.0), 1.0, (100, 100), (1.0, 1.0), (30, 1000))
    assert clipped == (0, 0, 30, 50)
    assert view_region((-500.0, -500.0), 1.0, (100, 100), (1.0, 1.0), (30, 30)) is None


def test_boxes_count_in_the_region_holding_their_centre():
    boxes = np.array([[0, 0, 50, 50], [90, 90, 140, 140], [200, 0, 250, 50]])
    np.testing.assert_array_equal(boxes_in_region(boxes, (0, 0, 120, 120)), [True, True, False])


def test_box_at_picks_the_smallest_box_under_the_point():
    boxes = np.array([[0, 0, 100, 100], [40, 40, 60, 60]])
    assert box_at(boxes, 50, 50) == 1
    assert box_at(boxes, 10, 10) == 0
    assert box_at(boxes, 500, 500) is None


def test_next_and_previous_walk_reading_order_skipping_decided_and_wrapping():
    boxes = np.array([[600, 0, 650, 50], [0, 0, 50, 50], [0, 600, 50, 650], [300, 10, 350, 60]], dtype=float)
    order = reading_order(boxes, band=512)
    np.testing.assert_array_equal(order, [1, 3, 0, 2])
    pending = np.array([True, True, True, False])
    assert step_in_order(order, pending, None, forward=True) == 1
    assert step_in_order(order, pending, 1, forward=True) == 0  # 3 is decided: skipped
    assert step_in_order(order, pending, 2, forward=True) == 1  # wraps
    assert step_in_order(order, pending, 1, forward=False) == 2  # wraps backwards
    assert step_in_order(order, np.zeros(4, bool), None, forward=True) is None


def test_done_regions_skip_cells_already_analysed_by_the_same_model():
    done = DoneRegions(cell=100)
    size = (250, 250)
    assert done.missing("m", (0, 0, 150, 150), size) == (0, 0, 200, 200)
    done.mark_done("m", (0, 0, 200, 100), size)
    assert done.missing("m", (0, 0, 150, 150), size) == (0, 100, 200, 100)
    assert done.missing("other model", (0, 0, 150, 150), size) == (0, 0, 200, 200)
    done.mark_done("m", (0, 0, 250, 250), size)  # edge cells cut by the image count as done
    assert done.missing("m", (0, 0, 250, 250), size) is None
