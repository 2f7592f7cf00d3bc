"""Grand-challenge "Multiple points" JSON: the organisers' folder, a case mapping, and ground truth."""

from __future__ import annotations

import json

import pytest

from midog_viewer.errors import AnnotationFormatError
from midog_viewer.formats import gc_points


def test_reads_the_organisers_folder(shared_data):
    folder = shared_data / "midog_eval_fixture" / "test" / "input"
    cases = gc_points.read_predictions(folder)
    assert list(cases) == ["007.tiff", "140.tiff", "201.tiff"]
    assert cases["007.tiff"][1] == gc_points.PointPrediction(130.1, 115.5, 0.5, "mitotic figure", 0.92)
    assert gc_points.read_predictions(folder / "predictions.json") == cases
    truth = gc_points.read_ground_truth(shared_data / "midog_eval_fixture" / "ground_truth" / "ground_truth.json")
    assert truth["140.tiff"].roi_type == "challenging" and truth["201.tiff"].tumor_domain == 1
    assert len(truth["140.tiff"].points) == 3


def test_case_mapping_round_trip_and_defaults(tmp_path):
    points = {"a.tiff": [gc_points.PointPrediction(0.1, 0.2, 0.0, "mitotic figure", 0.7)], "b.tiff": []}
    gc_points.write_cases(tmp_path / "p.json", points)
    assert gc_points.read_predictions(tmp_path / "p.json") == points
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"c": {"type": "Multiple points", "points": [{"point": [1, 2]}]}}))
    assert gc_points.read_predictions(old)["c"] == [gc_points.PointPrediction(1, 2, 0, "mitotic figure", 0.5)]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"type": "Multiple points", "points": []}, "single"),
        ({"c": {"points": [{"point": [1]}]}}, r"points\[0\]\.point"),
        ({"c": {"points": [{"point": [1, "y", 0]}]}}, r"points\[0\]\.point\[1\]"),
        ({"c": {"points": [{"point": [1, 2], "probability": "high"}]}}, "probability"),
        ({"c": {"points": "none"}}, "Multiple points"),
        ([1, 2], "map case names"),
    ],
)
def test_prediction_faults_name_the_field(tmp_path, doc, message):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(AnnotationFormatError, match=message):
        gc_points.read_predictions(path)


def test_ground_truth_faults(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"a": {"annotations": [[0.1, "x", 0]]}}))
    with pytest.raises(AnnotationFormatError, match=r"annotations\[0\]\[1\]"):
        gc_points.read_ground_truth(path)
    path.write_text(json.dumps({"a": [1]}))
    with pytest.raises(AnnotationFormatError, match="annotations"):
        gc_points.read_ground_truth(path)
    with pytest.raises(AnnotationFormatError, match="predictions.json"):
        gc_points.read_predictions(tmp_path)
