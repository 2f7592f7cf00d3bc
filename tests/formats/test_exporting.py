"""Export selections and formats: what a review produced goes out, and comes back in the same."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from midog_viewer.errors import AnnotationFormatError
from midog_viewer.review.exporting import export_store
from midog_viewer.review.importing import import_file
from midog_viewer.review import ReviewStore


@pytest.fixture
def reviewed(tmp_path):
    """One slide: a ground-truth mitosis, a hand mitosis, and detections accepted, rejected, relabelled, pending."""
    with ReviewStore(tmp_path / "r.db", reviewer="alice") as store:
        slide_id = store.add_slide("case.tiff", 0.25, 4000, 3000)
        store.add_annotations(slide_id, np.array([[0, 0, 50, 50]]), ["mitotic figure"], "gt.json")
        store.add_annotation(slide_id, [100, 100, 150, 150], "mitotic figure")
        run = store.add_detection_run(slide_id, "m", {})
        ids = store.add_detections(run, np.array([[200, 200, 250, 250], [300, 300, 350, 350], [400, 400, 450, 450],
                                                  [500, 500, 550, 550]]), [0.9, 0.8, 0.7, 0.6], ["mitotic figure"] * 4)
        store.decide(int(ids[0]), "accept")
        store.decide(int(ids[1]), "reject")
        store.decide(int(ids[2]), "relabel", label="hard negative")
        yield store


def test_csv_exports_everything_with_status(reviewed, tmp_path):
    summary = export_store(reviewed, "csv", tmp_path / "all.csv")
    rows = list(csv.DictReader((tmp_path / "all.csv").open()))
    assert summary.objects == len(rows) == 6
    assert sorted(r["status"] for r in rows) == ["accepted", "accepted", "ground truth", "pending", "rejected", "relabelled"]
    assert {r["score"] for r in rows if r["kind"] == "annotation"} == {""}


def test_reviewed_labels_round_trip_through_every_format(reviewed, tmp_path):
    expected = sorted([([0, 0, 50, 50], "mitotic figure"), ([100, 100, 150, 150], "mitotic figure"),
                       ([200, 200, 250, 250], "mitotic figure"), ([400, 400, 450, 450], "hard negative")])
    for fmt, name in (("coco", "o.json"), ("sliderunner", "o.sqlite"), ("geojson", "o.geojson"), ("csv", "o.csv")):
        selection = "reviewed"
        export_store(reviewed, fmt, tmp_path / name, selection=selection)
        with ReviewStore(tmp_path / f"back-{fmt}.db") as back:
            if fmt == "geojson":
                back.add_slide("o.tiff")
            import_file(back, tmp_path / name)
            slide = back.slides()[0]
            table = back.objects(slide.id)
            got = sorted((box, label) for box, label in zip(table.boxes.tolist(), table.label.tolist()))
            assert got == expected, fmt


def test_midog_json_is_what_evaluate_reads(reviewed, tmp_path):
    export_store(reviewed, "midog-json", tmp_path / "pred.json", selection="detections")
    doc = json.loads((tmp_path / "pred.json").read_text())
    points = doc["case.tiff"]["points"]
    assert doc["case.tiff"]["type"] == "Multiple points" and len(points) == 4
    assert points[0] == {"name": "mitotic figure", "point": [225 * 0.25e-3, 225 * 0.25e-3, 0.0], "probability": 0.9}
    assert points[2]["name"] == "non-mitotic figure"


def test_midog_json_needs_pixel_size(reviewed, tmp_path):
    reviewed.add_slide("nompp.tiff")
    with pytest.raises(AnnotationFormatError, match="nompp.tiff has no pixel size"):
        export_store(reviewed, "midog-json", tmp_path / "p.json")


def test_geojson_folder_per_slide_and_file_for_one(reviewed, tmp_path):
    reviewed.add_slide("second.svs", 0.5)
    with pytest.raises(AnnotationFormatError, match="folder"):
        export_store(reviewed, "geojson", tmp_path / "one.geojson")
    export_store(reviewed, "geojson", tmp_path / "folder")
    assert sorted(p.name for p in (tmp_path / "folder").iterdir()) == ["case.geojson", "second.geojson"]
    export_store(reviewed, "geojson", tmp_path / "one.geojson", slide_names=["case.tiff"])
    assert len(json.loads((tmp_path / "one.geojson").read_text())["features"]) == 4


def test_bad_export_requests(reviewed, tmp_path):
    with pytest.raises(AnnotationFormatError, match="unknown export format"):
        export_store(reviewed, "xml", tmp_path / "x")
    with pytest.raises(AnnotationFormatError, match="unknown selection"):
        export_store(reviewed, "csv", tmp_path / "x.csv", selection="some")
    with pytest.raises(AnnotationFormatError, match="no slide named"):
        export_store(reviewed, "csv", tmp_path / "x.csv", slide_names=["nope.tiff"])
