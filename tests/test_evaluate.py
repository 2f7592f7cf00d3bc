"""The MIDOG metric: the organisers' fixture reproduced exactly, the greedy rule, AP, boxes in pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from midog_viewer.errors import AnnotationFormatError
from midog_viewer.evaluate import (
    average_precision,
    evaluate_cases,
    f1_from_boxes,
    score_detection,
    write_pr_curve,
)
from midog_viewer.formats.gc_points import GroundTruthCase, PointPrediction, read_ground_truth, read_predictions
from midog_viewer.evaluate import match_points


@pytest.fixture(scope="module")
def fixture_dir(shared_data):
    return shared_data / "midog_eval_fixture"


def test_fixture_metrics_reproduced_exactly(fixture_dir):
    expected = json.loads((fixture_dir / "test/output/metrics.json").read_text())
    evaluation = evaluate_cases(
        read_ground_truth(fixture_dir / "ground_truth/ground_truth.json"), read_predictions(fixture_dir / "test/input")
    )
    assert evaluation.aggregates == expected["aggregates"]  # every figure, bit for bit (float ==)
    per_case = {c.case: c for c in evaluation.cases}
    for result in expected["results"]:
        case = per_case[result["image"]]
        assert {"true_positives": case.tp, "false_negatives": case.fn, "false_positives": case.fp} == result["metrics"]
    assert round(evaluation.aggregates["f1_score"], 4) == 0.4615


def test_score_detection_is_greedy_in_gt_order():
    # the prediction between two ground-truth points goes to the first; a second hit on a cell is an FP
    gt = [[0.0, 0.0, 0.0], [0.010, 0.0, 0.0]]
    assert score_detection(gt, [[0.005, 0.0]]) == (1, 1, 0)
    assert score_detection(gt[:1], [[0.001, 0.0], [0.002, 0.0]]) == (1, 0, 1)
    assert score_detection([], [[0.0, 0.0]]) == (0, 0, 1)
    assert score_detection(gt, []) == (0, 2, 0)
    assert score_detection([[0.0, 0.0]], [[0.0075, 0.0]]) == (1, 0, 0)  # on the radius is a hit
    assert score_detection([[0.0, 0.0]], [[0.00751, 0.0]]) == (0, 1, 1)


def test_nearest_free_prediction_wins():
    gt = [[0.0, 0.0], [0.004, 0.0]]
    pred = [[0.003, 0.0], [-0.001, 0.0]]
    assert score_detection(gt, pred) == (2, 0, 0)  # gt0 takes its nearest (index 1), gt1 gets index 0


def _evalutils_score_detection(gt, pred, radius):
    """evalutils' loop as the organisers run it (brute force, no grid): the reference for the one matcher."""
    gt, pred = np.asarray(gt, float).reshape(-1, 2), np.asarray(pred, float).reshape(-1, 2)
    taken = np.zeros(len(pred), dtype=bool)
    tp = 0
    for point in gt:
        distances = np.sqrt(((pred - point) ** 2).sum(axis=1))
        free = np.flatnonzero((distances <= radius) & ~taken)
        if len(free):
            taken[free[np.argsort(distances[free], kind="stable")[0]]] = True
            tp += 1
    return tp, len(gt) - tp, int((~taken).sum())


def test_match_points_agrees_with_the_evalutils_loop():
    rng = np.random.default_rng(1)
    for _ in range(20):
        gt = rng.uniform(0, 0.2, size=(rng.integers(0, 15), 2))
        pred = rng.uniform(0, 0.2, size=(rng.integers(0, 15), 2))
        match_of_gt, taken = match_points(gt, pred, 0.0075)
        tp = int((match_of_gt >= 0).sum())
        assert _evalutils_score_detection(gt, pred, 0.0075) == (tp, len(gt) - tp, int((~taken).sum()))
        assert score_detection(gt, pred) == (tp, len(gt) - tp, int((~taken).sum()))


def test_only_mitotic_figure_predictions_are_matched():
    gt = {"a": GroundTruthCase([(0.0, 0.0, 0.0)])}
    preds = {"a": [PointPrediction(0.0, 0.0, 0.0, "non-mitotic figure", 0.9)]}
    evaluation = evaluate_cases(gt, preds)
    assert (evaluation.tp, evaluation.fp, evaluation.fn) == (0, 0, 1)


def test_missing_and_unknown_cases():
    gt = {"a": GroundTruthCase([(0.0, 0.0, 0.0)]), "b": GroundTruthCase([(0.0, 0.0, 0.0)])}
    evaluation = evaluate_cases(gt, {"a": [PointPrediction(0.0, 0.0, 0.0, "mitotic figure", 0.9)]})
    assert evaluation.missing_cases == ["b"] and (evaluation.tp, evaluation.fn) == (1, 1)
    with pytest.raises(AnnotationFormatError, match="'zzz'"):
        evaluate_cases(gt, {"zzz": []})


def test_average_precision_perfect_and_empty():
    gt = [np.array([[0.1, 0.1, 0.0], [0.5, 0.5, 0.0]])]
    assert average_precision(gt, gt, [np.array([0.9, 0.8])]) == 1.0
    assert average_precision(gt, [np.zeros((0, 3))], [np.zeros(0)]) == 0.0
    assert average_precision([np.zeros((0, 3))], gt, [np.array([0.9, 0.8])]) == -1.0


def test_threshold_curve_and_pr_png(fixture_dir, tmp_path):
    evaluation = evaluate_cases(
        read_ground_truth(fixture_dir / "ground_truth/ground_truth.json"), read_predictions(fixture_dir / "test/input")
    )
    curve = evaluation.threshold_curve()
    assert [row["threshold"] for row in curve] == [0.4, 0.52, 0.85, 0.92]
    assert curve[0]["f1"] == evaluation.aggregates["f1_score"]  # the lowest threshold keeps every prediction
    assert (curve[1]["tp"], curve[1]["fp"], curve[1]["fn"]) == (3, 2, 4)
    rows = evaluation.case_rows()
    assert {r["case"]: (r["tp"], r["fp"], r["fn"]) for r in rows} == {
        "007.tiff": (1, 1, 0), "140.tiff": (2, 0, 1), "201.tiff": (0, 2, 3)}
    assert evaluation.suspicious_cases() == ["007.tiff"]  # its second point lies at (130.1, 115.5) mm
    coarse = evaluation.threshold_curve(max_thresholds=2)
    assert [row["threshold"] for row in coarse] == [0.4, 0.92]
    write_pr_curve(evaluation, tmp_path / "pr.png")
    assert (tmp_path / "pr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_f1_from_boxes_in_pixels():
    gt = [np.array([[0, 0, 50, 50], [1000, 1000, 1050, 1050]]), np.zeros((0, 4))]
    # 7.5 µm at 0.25 µm/px = 30 px: the first prediction is 20 px off (hit), the second 40 px off (miss)
    pred = [np.array([[20, 0, 70, 50], [1040, 1000, 1090, 1050]]), np.array([[5, 5, 10, 10]])]
    result = f1_from_boxes(gt, pred, [0.25, 0.25])
    assert (result["tp"], result["fp"], result["fn"]) == (1, 2, 1)
    assert result["f1"] == pytest.approx(2 / 5, abs=1e-6)
    at_coarser = f1_from_boxes(gt, pred, [0.5, 0.5])  # 7.5 µm = 15 px now: nothing is close enough
    assert at_coarser["tp"] == 0
    labelled = f1_from_boxes(gt, pred, [0.25, 0.25], pred_labels_per_image=[["hard negative", "mitotic figure"], [1]])
    assert (labelled["tp"], labelled["fp"], labelled["fn"]) == (0, 1, 2)
    scored = f1_from_boxes(gt, pred, [0.25, 0.25], pred_scores_per_image=[[0.9, 0.1], [0.2]], score_threshold=0.5)
    assert (scored["tp"], scored["fp"], scored["fn"]) == (1, 0, 1)
    with pytest.raises(AnnotationFormatError):
        f1_from_boxes(gt, pred, [0.25])
