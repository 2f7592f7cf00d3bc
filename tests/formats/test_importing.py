"""Importing the field's real annotation files: the published totals, the same boxes from JSON and SQLite."""

from __future__ import annotations

import json

import numpy as np
import pytest

from midog_viewer.errors import AnnotationFormatError, ReviewStoreError
from midog_viewer.formats.importing import detect_format, read_file
from midog_viewer.review.importing import import_file
from midog_viewer.review import ReviewStore


def boxes_by_image(store):
    """{slide name: sorted rows of (x1, y1, x2, y2, label)} of a store's annotations."""
    result = {}
    for slide in store.slides():
        table = store.objects(slide.id)
        rows = sorted(zip(table.x1.tolist(), table.y1.tolist(), table.x2.tolist(), table.y2.tolist(), table.label.tolist()))
        if rows:
            result[slide.name] = rows
    return result


@pytest.fixture(scope="module")
def annotations(shared_data):
    return shared_data / "annotations"


def test_midog_json_and_sqlite_give_the_same_labels(annotations, tmp_path):
    with ReviewStore(tmp_path / "json.db") as from_json, ReviewStore(tmp_path / "sqlite.db") as from_sqlite:
        summary_json = import_file(from_json, annotations / "MIDOG.json")
        summary_sqlite = import_file(from_sqlite, annotations / "MIDOG.sqlite")
        for summary in (summary_json, summary_sqlite):
            assert summary.images == 150 and summary.slides == 200
            assert summary.classes == {"mitotic figure": 1721, "hard negative": 2714}
        assert boxes_by_image(from_json) == boxes_by_image(from_sqlite)
        # MIDOG 2021 pixel sizes: 0.23 µm for 001–100, 0.25 µm for 101–200
        assert from_json.find_slide("001.tiff").mpp == 0.23 and from_json.find_slide("150.tiff").mpp == 0.25
        assert from_sqlite.find_slide("100.tiff").mpp == 0.23
        assert from_json.find_slide("001.tiff").width == 7215


def test_midog_plus_plus_totals(annotations, tmp_path):
    with ReviewStore(tmp_path / "pp.db") as store:
        summary = import_file(store, annotations / "MIDOG++.json")
        assert summary.classes == {"mitotic figure": 11937, "hard negative": 14349}
        assert summary.images == 503 and summary.slides == 553
        assert store.find_slide("553.tiff").mpp is None  # the README gives no pixel size beyond MIDOG 2021


def test_other_sliderunner_databases(annotations):
    mitos = read_file(annotations / "MITOS2012.sqlite")
    assert sum(len(image) for image in mitos) == 226 and len(mitos) == 35
    assert {label for image in mitos for label in image.labels} == {"mitotic figure"}
    demo = read_file(annotations / "sliderunner_demo.sqlite")[0]
    assert sorted(demo.labels) == ["1st class", "1st class", "2nd class", "2nd class", "2nd class"]
    assert np.all(demo.boxes[:, 2] > demo.boxes[:, 0])


def test_point_box_size_in_micrometres(annotations, tmp_path):
    images = read_file(annotations / "MIDOG.sqlite", point_box_um=10.0)
    first = next(image for image in images if len(image))
    width = first.boxes[0, 2] - first.boxes[0, 0]
    assert width == pytest.approx(10.0 / first.mpp)


def test_import_twice_is_refused_and_changes_nothing(annotations, tmp_path):
    with ReviewStore(tmp_path / "twice.db") as store:
        import_file(store, annotations / "MIDOG.json")
        before = boxes_by_image(store)
        with pytest.raises(ReviewStoreError, match="already"):
            import_file(store, annotations / "MIDOG.json")
        assert boxes_by_image(store) == before


def test_import_matches_existing_slides_by_name(tmp_path):
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("image,label,x,y\nslide.tiff,mitosis,100,100\nslide.tiff,Nonmitosis,300,300\n")
    with ReviewStore(tmp_path / "m.db") as store:
        slide_id = store.add_slide(tmp_path / "nowhere" / "slide.tiff", 0.25, 1000, 1000)
        summary = import_file(store, csv_file)
        assert summary.classes == {"mitotic figure": 1, "hard negative": 1}
        assert len(store.slides()) == 1
        assert store.objects(slide_id).boxes.tolist()[0] == [75, 75, 125, 125]


def test_images_folder_registers_real_files(tmp_path):
    import tifffile  # a dependency, as is our own midog_viewer.io that the import reads it with

    images = tmp_path / "images"
    images.mkdir()
    tifffile.imwrite(images / "a.tif", np.zeros((64, 96, 3), np.uint8), photometric="rgb")
    csv_file = tmp_path / "a.csv"
    csv_file.write_text("image,label,x1,y1,x2,y2\na.tif,mitotic figure,1,2,11,12\nb.tif,mitotic figure,1,2,11,12\n")
    with ReviewStore(tmp_path / "i.db") as store:
        import_file(store, csv_file, images_dir=images)
        real, missing = store.find_slide("a.tif"), store.find_slide("b.tif")
        assert real.path == str((images / "a.tif").resolve()) and (real.width, real.height) == (96, 64)
        assert missing.path == "b.tif"


def test_geojson_goes_to_the_slide_with_its_stem(tmp_path):
    geo = tmp_path / "slide7.geojson"
    geo.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [100, 200]},
         "properties": {"classification": {"name": "Mitosis"}}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 20], [0, 0]]]},
         "properties": {"classification": {"name": "Tumor"}}},
    ]}))
    with ReviewStore(tmp_path / "g.db") as store:
        slide_id = store.add_slide("slide7.svs", 0.25, 1000, 1000)
        import_file(store, geo)
        table = store.objects(slide_id)
        assert table.label.tolist() == ["mitotic figure", "Tumor"]
        assert table.boxes.tolist() == [[75, 175, 125, 225], [0, 0, 10, 20]]


def test_format_detection(tmp_path):
    (tmp_path / "a.json").write_text('{"type": "FeatureCollection", "features": []}')
    (tmp_path / "b.json").write_text('{"images": []}')
    assert detect_format(tmp_path / "a.json") == "geojson"
    assert detect_format(tmp_path / "b.json") == "midog"
    (tmp_path / "c.sqlite").write_bytes(b"")
    assert detect_format(tmp_path / "c.sqlite") == "sliderunner"
    (tmp_path / "d.xml").write_text("<x/>")
    with pytest.raises(AnnotationFormatError, match="suffix"):
        detect_format(tmp_path / "d.xml")


def test_the_same_labels_from_another_format_add_nothing(annotations, tmp_path):
    from midog_viewer.review.importing import summary_line
    from midog_viewer.review.counts import count_slide

    with ReviewStore(tmp_path / "r.db") as store:
        first = import_file(store, annotations / "MIDOG.json")
        assert first.skipped == 0
        before = boxes_by_image(store)
        score_before = count_slide(store, store.find_slide("002.tiff").id).as_json()
        second = import_file(store, annotations / "MIDOG.sqlite")
        assert second.classes == {} and second.skipped == 1721 + 2714  # was: every label again
        assert boxes_by_image(store) == before
        assert count_slide(store, store.find_slide("002.tiff").id).as_json() == score_before
        line = summary_line(second)
        assert "no new labels" in line and "skipped 4,435 already in the store" in line
        assert second.as_json()["skipped_already_stored"] == 4435


def test_a_label_near_a_stored_one_of_another_class_or_beyond_the_radius_is_added(tmp_path):
    images = [{"id": 1, "file_name": "a.tiff", "width": 4000, "height": 4000}]
    categories = [{"id": 1, "name": "mitotic figure"}, {"id": 2, "name": "hard negative"}]

    def write(name, boxes):
        annotations = [{"id": i, "image_id": 1, "bbox": b, "category_id": c} for i, (b, c) in enumerate(boxes, 1)]
        (tmp_path / name).write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
        return tmp_path / name

    with ReviewStore(tmp_path / "r.db") as store:
        store.add_slide("a.tiff", 0.25, 4000, 4000)
        import_file(store, write("one.json", [([100, 100, 150, 150], 1)]))
        # 7 µm (28 px) away, same class: skipped; same place, other class: added; 8 µm (32 px) away: added
        summary = import_file(store, write("two.json", [([128, 100, 178, 150], 1), ([100, 100, 150, 150], 2),
                                                        ([100, 132, 150, 182], 1)]))
        assert summary.skipped == 1 and summary.classes == {"mitotic figure": 1, "hard negative": 1}
        assert len(store.objects(store.find_slide("a.tiff").id)) == 3
