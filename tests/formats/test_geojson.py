"""QuPath GeoJSON: points and polygons with a classification, written as classified rectangles."""

from __future__ import annotations

import json

import numpy as np
import pytest

from midog_viewer.errors import AnnotationFormatError
from midog_viewer.formats import geojson


def test_reads_points_multipoints_polygons_and_bare_lists(tmp_path):
    features = [
        {"type": "Feature", "geometry": {"type": "MultiPoint", "coordinates": [[10, 10], [200, 200]]},
         "properties": {"classification": {"name": "mitotic figure", "color": [255, 0, 0]}}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[5, 6], [30, 6], [30, 40], [5, 6]]]},
         "properties": {"classification": "Hard negative"}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [0, 0]}, "properties": {}},
    ]
    path = tmp_path / "objects.geojson"
    path.write_text(json.dumps(features))
    image = geojson.read(path, "img.svs", point_box_px=20)[0]
    assert image.name == "img.svs"
    assert image.labels == ["mitotic figure", "mitotic figure", "hard negative", "unclassified"]
    assert image.boxes.tolist() == [[0, 0, 20, 20], [190, 190, 210, 210], [5, 6, 30, 40], [-10, -10, 10, 10]]


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"type": "FeatureCollection", "features": [{"type": "Feature"}]}, r"features\[0\] must be a Feature"),
        ([{"geometry": {"type": "Circle", "coordinates": [1, 2]}}], r"features\[0\]\.geometry\.type 'Circle'"),
        ([{"geometry": {"type": "Point", "coordinates": ["a", 2]}}], r"features\[0\]\.geometry\.coordinates"),
        ([{"geometry": {"type": "Point", "coordinates": [1, 2]}, "properties": {"classification": 5}}], "classification"),
        ({"type": "FeatureCollection"}, "FeatureCollection"),
    ],
)
def test_faults_name_the_feature(tmp_path, doc, field):
    path = tmp_path / "bad.geojson"
    path.write_text(json.dumps(doc))
    with pytest.raises(AnnotationFormatError, match=field):
        geojson.read(path, "x")


def test_write_read_round_trip(tmp_path):
    boxes = np.array([[1, 2, 30, 40], [50, 60, 70, 80]], dtype=float)
    geojson.write(tmp_path / "o.geojson", boxes, ["mitotic figure", "hard negative"], [{"score": 0.5}, {}])
    doc = json.loads((tmp_path / "o.geojson").read_text())
    assert doc["features"][0]["properties"]["classification"]["name"] == "mitotic figure"
    assert doc["features"][0]["properties"]["score"] == 0.5
    back = geojson.read(tmp_path / "o.geojson", "x")[0]
    np.testing.assert_array_equal(back.boxes, boxes)
    assert back.labels == ["mitotic figure", "hard negative"]
