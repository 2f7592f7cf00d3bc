"""MIDOG COCO-style JSON: xyxy boxes by default, standard COCO xywh only when asked; faults name the field."""

from __future__ import annotations

import json

import numpy as np
import pytest

from midog_viewer.errors import AnnotationFormatError
from midog_viewer.formats import midog_coco
from midog_viewer.formats.records import ImageAnnotations

DOC = {
    "info": {"description": "MIDOG test"},
    "images": [{"id": 1, "file_name": "001.tiff", "width": 100, "height": 80}, {"id": 2, "file_name": "150.tiff"}],
    "categories": [{"id": 1, "name": "mitotic figure"}, {"id": 2, "name": "not mitotic figure"}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [10, 20, 60, 70]}],
}


def write(tmp_path, doc, name="a.json"):
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def test_reads_xyxy_and_midog_pixel_size(tmp_path):
    images = midog_coco.read(write(tmp_path, DOC))
    assert [i.name for i in images] == ["001.tiff", "150.tiff"]
    assert images[0].boxes.tolist() == [[10, 20, 60, 70]] and images[0].labels == ["hard negative"]
    assert (images[0].mpp, images[1].mpp, images[0].width) == (0.23, 0.25, 100)


def test_standard_coco_needs_the_option(tmp_path):
    doc = json.loads(json.dumps(DOC))
    doc["annotations"][0]["bbox"] = [10, 20, 5, 5]  # x, y, w, h
    doc["info"] = {}
    path = write(tmp_path, doc)
    with pytest.raises(AnnotationFormatError, match=r"annotations\[0\]\.bbox.*xywh"):
        midog_coco.read(path)
    images = midog_coco.read(path, "xywh")
    assert images[0].boxes.tolist() == [[10, 20, 15, 25]] and images[0].mpp is None


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["annotations"][0].pop("bbox"), r"annotations\[0\] has no \"bbox\""),
        (lambda d: d["annotations"][0].update(image_id=9), r"annotations\[0\]\.image_id 9"),
        (lambda d: d["annotations"][0].update(category_id=5), r"annotations\[0\]\.category_id 5"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, "x", 4]), r"annotations\[0\]\.bbox"),
        (lambda d: d["images"][1].update(id=1), r"images\[1\]\.id 1"),
        (lambda d: d["images"][0].update(width=-3), r"images\[0\]\.width"),
        (lambda d: d.pop("categories"), r"\"categories\""),
        (lambda d: d["images"][0].update(file_name=7), r"images\[0\]\.file_name"),
    ],
)
def test_faults_name_the_field(tmp_path, mutate, field):
    doc = json.loads(json.dumps(DOC))
    mutate(doc)
    with pytest.raises(AnnotationFormatError, match=field):
        midog_coco.read(write(tmp_path, doc))


def test_broken_json_names_the_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n "images": [\n  {"id": 1,,}\n ]\n}')
    with pytest.raises(AnnotationFormatError, match="line 3"):
        midog_coco.read(path)


@pytest.mark.parametrize("bbox_format", ["xyxy", "xywh"])
def test_write_read_round_trip(tmp_path, bbox_format):
    images = [ImageAnnotations("x.tiff", 500, 400, 0.5, np.array([[1.5, 2, 51.5, 52], [100, 100, 150, 160]]),
                               ["mitotic figure", "Tumor"])]
    midog_coco.write(tmp_path / "o.json", images, bbox_format)
    back = midog_coco.read(tmp_path / "o.json", bbox_format)[0]
    np.testing.assert_allclose(back.boxes, images[0].boxes)
    assert back.labels == images[0].labels and back.mpp == 0.5 and back.width == 500
    names = [c["name"] for c in json.loads((tmp_path / "o.json").read_text())["categories"]]
    assert names == ["mitotic figure", "not mitotic figure", "Tumor"]
