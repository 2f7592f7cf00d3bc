"""The "one cell" helpers of evaluate.py that counts and imports share: merge_within_radius and near_any."""

from __future__ import annotations

import numpy as np
import pytest

from midog_viewer.errors import AnnotationFormatError
from midog_viewer.evaluate import RADIUS_MM, merge_within_radius, near_any


def test_points_within_the_radius_of_a_figure_are_that_figure():
    r = RADIUS_MM
    points = [[0, 0], [0.9 * r, 0], [1.5 * r, 0], [5 * r, 0], [5 * r, r]]
    # 1 joins 0; 2 is beyond 0 (the figure's first point), so it starts one: no chaining across cells
    assert merge_within_radius(points).tolist() == [0, 0, 2, 3, 3]
    assert merge_within_radius([[0, 0], [r * 0.6, 0], [r * 1.3, 0]]).tolist() == [0, 0, 2]
    assert merge_within_radius(np.zeros((0, 2))).tolist() == []


def test_a_point_joins_the_nearest_figure():
    r = RADIUS_MM
    assert merge_within_radius([[0, 0], [1.8 * r, 0], [1.0 * r, 0]]).tolist() == [0, 1, 1]


def test_near_any_and_bad_radii():
    r = RADIUS_MM
    assert near_any([[0, 0], [0, 1.01 * r], [10, 10]], [[0, 0.0], [10 + 0.99 * r, 10]]).tolist() == [True, False, True]
    assert near_any([[0, 0]], np.zeros((0, 2))).tolist() == [False]
    for radius in (0.0, -1.0, float("nan")):
        with pytest.raises(AnnotationFormatError):
            merge_within_radius([[0, 0]], radius)
