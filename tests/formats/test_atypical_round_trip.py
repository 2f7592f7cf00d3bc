"""Exports carry each mitotic figure's subtype, and the importers read it back (every format with boxes)."""

from __future__ import annotations

import csv
import json
import sqlite3

import numpy as np
import pytest

from midog_viewer.errors import AnnotationFormatError
from midog_viewer.review import ReviewStore
from midog_viewer.review.exporting import export_store
from midog_viewer.review.importing import import_file

FORMATS = (("coco", "o.json"), ("sliderunner", "o.sqlite"), ("geojson", "o.geojson"), ("csv", "o.csv"))


@pytest.fixture
def reviewed(tmp_path):
    """Accepted figures: the model calls one atypical, one normal; a reviewer turns a third atypical; and a
    ground-truth figure whose file said nothing, and a hard negative (no subtype)."""
    with ReviewStore(tmp_path / "r.db", reviewer="alice") as store:
        slide_id = store.add_slide("case.tiff", 0.25, 4000, 3000)
        store.add_annotations(slide_id, np.array([[0, 0, 50, 50], [600, 600, 650, 650]]),
                              ["mitotic figure", "hard negative"], "gt.json")
        run = store.add_detection_run(slide_id, "m", {}, atypical_threshold=0.5)
        ids = store.add_detections(run, np.array([[200, 200, 250, 250], [300, 300, 350, 350], [400, 400, 450, 450]]),
                                   [0.9, 0.8, 0.7], ["mitotic figure"] * 3, [0.9, 0.2, 0.1])
        for i in ids:
            store.decide(int(i), "accept")
        store.decide_subtype("detection", int(ids[2]), True)
        yield store


EXPECTED = {(0, 0): None, (200, 200): 1, (300, 300): 0, (400, 400): 1, (600, 600): None}


def _subtypes(store):
    table = store.objects(store.slides()[0].id)
    return {(int(b[0]), int(b[1])): (None if a < 0 else int(a)) for b, a in zip(table.boxes, table.atypical)}


@pytest.mark.parametrize("fmt,name", FORMATS)
def test_the_subtype_goes_out_and_comes_back(reviewed, tmp_path, fmt, name):
    export_store(reviewed, fmt, tmp_path / name, selection="reviewed")
    with ReviewStore(tmp_path / f"back-{fmt}.db") as back:
        if fmt == "geojson":
            back.add_slide("o.tiff")
        import_file(back, tmp_path / name)
        assert _subtypes(back) == EXPECTED, fmt


def test_what_each_file_says(reviewed, tmp_path):
    export_store(reviewed, "csv", tmp_path / "a.csv")
    rows = {(r["x1"], r["atypical"], r["p_atypical"]) for r in csv.DictReader((tmp_path / "a.csv").open())}
    assert ("200.0", "1", "0.9") in rows and ("0.0", "", "") in rows
    export_store(reviewed, "coco", tmp_path / "c.json")
    annotations = json.loads((tmp_path / "c.json").read_text())["annotations"]
    assert [a.get("atypical") for a in annotations] == [1, 0, 1, None, None]  # detections first, then annotations
    export_store(reviewed, "geojson", tmp_path / "g.geojson")
    features = json.loads((tmp_path / "g.geojson").read_text())["features"]
    assert [f["properties"].get("atypical") for f in features] == [True, False, True, None, None]
    export_store(reviewed, "sliderunner", tmp_path / "s.sqlite")
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        described = [r[0] for r in db.execute("SELECT description FROM Annotations ORDER BY uid")]
        classes = {r[0] for r in db.execute("SELECT c.name FROM Annotations a JOIN Classes c ON c.uid = a.agreedClass")}
    assert described.count("atypical") == 2 and described.count("normal") == 1
    assert "atypical" not in " ".join(classes)  # a property, not a class


def test_a_bad_subtype_in_a_file_is_one_clear_message(tmp_path):
    (tmp_path / "bad.csv").write_text("image,label,x1,y1,x2,y2,atypical\ns.tiff,mitotic figure,0,0,5,5,maybe\n")
    with ReviewStore(tmp_path / "r.db") as store, pytest.raises(AnnotationFormatError, match="line 2: atypical is 'maybe'"):
        import_file(store, tmp_path / "bad.csv")
    with ReviewStore(tmp_path / "r.db") as store:
        assert store.slides() == []  # nothing stored
