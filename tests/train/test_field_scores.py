"""The field-equivalent F1 of crop validation: recall and false positives per mm² judged at a field's density."""

from __future__ import annotations

import numpy as np
import pytest

from midog_viewer.detect.detections import Detections
from midog_viewer.train.sources import LabelledImage
from midog_viewer.train.validate import field_scores, tuned_field_scores


def _crop(key: str, source: str, mitosis: bool) -> LabelledImage:
    boxes = np.array([[39, 39, 89, 89]], np.float32) if mitosis else np.zeros((0, 4), np.float32)
    return LabelledImage(key, boxes, np.zeros(len(boxes), np.int64), 128, 128, 0.25, source=source)


def _detections(*boxes_scores) -> Detections:
    boxes = np.array([b for b, _ in boxes_scores], np.float32).reshape(-1, 4)
    scores = np.array([s for _, s in boxes_scores], np.float32)
    return Detections(boxes, scores, np.zeros(len(scores), np.int64))


def test_false_positives_per_area_set_the_field_f1_not_the_crops_own_f1():
    images = [_crop(f"m{i}", "A", True) for i in range(4)] + [_crop(f"b{i}", "B", False) for i in range(4)]
    hit, elsewhere = ([40, 40, 88, 88], 0.9), ([0, 0, 30, 30], 0.6)
    predictions = [_detections(hit)] * 3 + [_detections()] + [_detections(elsewhere)] + [_detections()] * 3
    scores = field_scores(images, predictions, 0.5, mitoses_per_mm2=5.7)
    area = 8 * 128 * 128 * 0.25**2 / 1e6
    assert scores["recall"] == pytest.approx(0.75) and scores["fp_per_mm2"] == pytest.approx(1 / area)
    recall, density, fp = 0.75, 5.7, 1 / area
    assert scores["f1"] == pytest.approx(2 * recall * density / (recall * density + density + fp))
    assert scores["crop_f1"] == pytest.approx(0.75)  # the crops alone look far better than a field would
    assert scores["f1"] < 0.1
    assert field_scores(images, predictions, 0.7)["fp_per_mm2"] == 0.0  # the false positive scores 0.6


def test_the_operating_point_is_chosen_by_the_field_f1_and_reported_per_source():
    images = [_crop(f"m{i}", "A", True) for i in range(4)] + [_crop(f"b{i}", "B", False) for i in range(4)]
    predictions = [_detections(([40, 40, 88, 88], 0.92))] * 4 + [_detections(([0, 0, 30, 30], 0.6))] * 4
    best = tuned_field_scores(images, predictions, 5.7)
    assert best["score_threshold"] == pytest.approx(0.9) and best["f1"] == pytest.approx(1.0)
    assert set(best["per_source"]) == {"A", "B"} and best["per_source"]["A"]["recall"] == 1.0
