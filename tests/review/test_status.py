"""Status colours and the evaluation colouring against ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from midog_viewer.errors import ReviewStoreError
from midog_viewer.review import ReviewStore, Status, colour_for
from midog_viewer.evaluate import match_points
from midog_viewer.review.evaluation_view import evaluation_table


def test_review_colours():
    assert colour_for(Status.PENDING) == "yellow"
    assert colour_for("accepted") == "white"
    assert colour_for(Status.GROUND_TRUTH) == "white"
    assert colour_for(Status.REJECTED) == "red"
    assert colour_for(Status.RELABELLED) == "red"


def test_evaluation_colours():
    assert [colour_for(s) for s in (Status.MATCHED, Status.UNMATCHED, Status.MISSED)] == ["yellow", "red", "white"]


def test_every_status_has_a_colour():
    assert {colour_for(s) for s in Status} == {"yellow", "white", "red"}


def test_match_points_is_greedy_in_ground_truth_order():
    gt = np.array([[0.0, 0.0], [10.0, 0.0]])
    pred = np.array([[6.0, 0.0], [30.0, 0.0]])
    match_of_gt, taken = match_points(gt, pred, radius=7.0)
    # the first ground-truth point takes the shared prediction, the second finds none left
    assert match_of_gt.tolist() == [0, -1] and taken.tolist() == [True, False]


def test_evaluation_table_colours_matches(tmp_path):
    with ReviewStore(tmp_path / "e.db") as store:
        slide_id = store.add_slide("x.tiff", 0.25, 2000, 2000)  # 7.5 µm = 30 px
        store.add_annotations(slide_id, np.array([[0, 0, 50, 50], [1000, 1000, 1050, 1050], [0, 500, 50, 550]]),
                              ["mitotic figure", "mitotic figure", "hard negative"], "gt.json")
        run = store.add_detection_run(slide_id, "m", {})
        store.add_detections(run, np.array([[10, 0, 60, 50], [500, 500, 550, 550], [20, 0, 70, 50], [1000, 1000, 1050, 1050]]),
                             [0.9, 0.8, 0.7, 0.1], ["mitotic figure"] * 3 + ["hard negative"])
        table = evaluation_table(store, slide_id)
        # detection 1 is nearest the first mitosis; detection 3 is a second hit on the same cell (FP);
        # the hard-negative detection on the second mitosis does not count, so that mitosis is missed
        got = {(k, int(i)): s for k, i, s in zip(table.kind, table.id, table.status)}
        assert got == {
            ("detection", 1): "matched", ("detection", 2): "unmatched", ("detection", 3): "unmatched",
            ("annotation", 1): "ground truth", ("annotation", 2): "missed",
        }
        assert evaluation_table(store, slide_id, score_threshold=0.95).status.tolist() == ["missed", "missed"]
        cropped = evaluation_table(store, slide_id, region=(900, 900, 300, 300))
        assert cropped.kind.tolist() == ["annotation"] and cropped.status.tolist() == ["missed"]
        nompp = store.add_slide("y.tiff")
        with pytest.raises(ReviewStoreError, match="pixel size"):
            evaluation_table(store, nompp)
