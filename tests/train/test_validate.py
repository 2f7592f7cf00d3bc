"""Choosing the operating score threshold on validation images."""

from __future__ import annotations

import numpy as np

from midog_viewer.detect.detections import Detections
from midog_viewer.train.sources import LabelledImage
from midog_viewer.train.validate import CANDIDATE_THRESHOLDS, midog_scores, tuned_scores

NAMES = ("mitotic figure", "hard negative")


def _image(boxes: list[list[float]]) -> LabelledImage:
    return LabelledImage(key="im", boxes=np.array(boxes, np.float32), labels=np.zeros(len(boxes), np.int64),
                         width=512, height=512, mpp=0.25, pixels=np.zeros((512, 512, 3), np.uint8))


def test_the_threshold_with_the_best_f1_is_chosen_and_named():
    truth = [[0, 0, 50, 50], [100, 100, 150, 150], [200, 200, 250, 250]]
    image = _image(truth)
    # Two true figures score 0.35 and 0.4, the third 0.2; a false positive far away scores 0.3.
    found = Detections(
        np.array(truth + [[400, 400, 450, 450]], np.float32), np.array([0.35, 0.4, 0.2, 0.3], np.float32),
        np.zeros(4, np.int64), NAMES,
    )
    best = tuned_scores([image], [found])
    # At 0.1-0.2: 3 TP, 1 FP (F1 0.857); at 0.35: 2 TP, 1 FN (0.8). Ties go to the highest threshold.
    assert best["score_threshold"] == 0.2 and (best["tp"], best["fp"], best["fn"]) == (3, 1, 0)
    expected = max(CANDIDATE_THRESHOLDS, key=lambda t: (midog_scores([image], [found], t)["f1"], t))
    assert best["score_threshold"] == expected
    assert best["f1"] == max(midog_scores([image], [found], t)["f1"] for t in CANDIDATE_THRESHOLDS)
