"""Hostile and inconsistent annotation files: no escape from the image folder, no impossible boxes, no relabelling."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from midog_viewer.errors import AnnotationFormatError
from midog_viewer.formats import sliderunner
from midog_viewer.review.importing import import_file, summary_line
from midog_viewer.formats.records import ImageAnnotations
from midog_viewer.review import ReviewStore


def coco(path, names, bbox=(10, 10, 60, 60), categories=((1, "mitotic figure"),), width=None):
    images = [{"id": i + 1, "file_name": name, **({"width": width, "height": width} if width else {})}
              for i, name in enumerate(names)]
    annotations = [{"id": i + 1, "image_id": i + 1, "bbox": list(bbox), "category_id": 1} for i in range(len(names))]
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": i, "name": n} for i, n in categories]}))
    return path


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside.tiff", "sub/../../outside.tiff", "..\\outside.tiff", ""])
@pytest.mark.parametrize("with_folder", [True, False])
def test_image_names_cannot_leave_the_image_folder(tmp_path, name, with_folder):
    images = tmp_path / "images"
    images.mkdir()
    (tmp_path / "outside.tiff").write_bytes(b"not yours")
    source = coco(tmp_path / "a.json", [name])
    with ReviewStore(tmp_path / "r.db") as store:
        with pytest.raises(AnnotationFormatError, match="file names inside the image folder|is empty"):
            import_file(store, source, images_dir=images if with_folder else None)
        assert store.slides() == []


def test_without_an_image_folder_names_are_never_looked_up(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.tiff").write_bytes(b"a file that happens to share the name")
    with ReviewStore(tmp_path / "r.db") as store:
        import_file(store, coco(tmp_path / "a.json", ["a.tiff", "sub/b.tiff"]))
        slides = {slide.name: slide.path for slide in store.slides()}
    assert slides == {"a.tiff": "a.tiff", "b.tiff": "sub/b.tiff"}  # names, not resolved paths in the current folder


def test_coordinates_no_slide_can_have_are_refused(tmp_path):
    source = coco(tmp_path / "huge.json", ["a.tiff"], bbox=(0, 0, 1e300, 1e300))
    csv_file = tmp_path / "huge.csv"
    csv_file.write_text("image,label,x,y\na.tiff,mitosis,-2e7,5\n")
    with ReviewStore(tmp_path / "r.db") as store:
        for path in (source, csv_file):
            with pytest.raises(AnnotationFormatError, match=r"beyond ±10,000,000 px .*first: \[") as caught:
                import_file(store, path)
            assert "\n" not in str(caught.value)
        assert store.slides() == []


def test_boxes_outside_their_image_are_counted_and_warned_about(tmp_path):
    path = tmp_path / "edge.json"
    images = [{"id": 1, "file_name": "a.tiff", "width": 100, "height": 100}]
    boxes = [[10, 10, 60, 60], [-30, 10, 20, 60], [150, 150, 200, 200], [10, -90, 40, -60]]
    path.write_text(json.dumps({"images": images, "categories": [{"id": 1, "name": "mitotic figure"}],
                                "annotations": [{"id": i, "image_id": 1, "bbox": b, "category_id": 1}
                                                for i, b in enumerate(boxes)]}))
    with ReviewStore(tmp_path / "r.db") as store:
        summary = import_file(store, path)
        assert len(store.objects(store.slides()[0].id)) == 4  # imported as they are, and said so
    assert summary.outside == 2 and summary.as_json()["outside_image"] == 2
    line = summary_line(summary)
    assert "\n" not in line and "warning: 2 boxes lie wholly outside their image (first: a.tiff [150, 150, 200, 200]" in line


def test_a_duplicate_category_id_is_refused_instead_of_relabelling(tmp_path):
    source = coco(tmp_path / "dup.json", ["a.tiff"], categories=((1, "mitotic figure"), (1, "not mitotic figure")))
    with ReviewStore(tmp_path / "r.db") as store:
        with pytest.raises(AnnotationFormatError, match=r"categories\[1\]\.id 1 is used by two categories"):
            import_file(store, source)


def test_a_sliderunner_file_with_duplicate_class_or_slide_ids_is_refused(tmp_path):
    for table, statement in (("Classes", "INSERT INTO Classes(uid, name) VALUES (1, 'not mitotic figure')"),
                             ("Slides", "INSERT INTO Slides(uid, filename) VALUES (1, 'c.tiff')")):
        path = tmp_path / f"dup-{table}.sqlite"
        sliderunner.write(path, [ImageAnnotations("a.tiff", 100, 100, None, np.array([[0, 0, 10, 10]]), ["mitotic figure"])])
        db = sqlite3.connect(path)
        db.execute(f"CREATE TABLE copy AS SELECT * FROM {table}")  # the same table without its primary key
        db.execute(f"DROP TABLE {table}")
        db.execute(f"ALTER TABLE copy RENAME TO {table}")
        db.execute(statement)
        db.commit()
        db.close()
        with pytest.raises(AnnotationFormatError, match=f"{table} uid=1 is used by two"):
            sliderunner.read(path)


@pytest.mark.parametrize("name", ["my%20db.sqlite", "my#db.sqlite", "my?db.sqlite", "100%.sqlite"])
def test_sliderunner_file_names_are_not_read_as_uri_syntax(tmp_path, name):
    def write(path, n):
        boxes = np.array([[i * 100, 0, i * 100 + 50, 50] for i in range(n)], dtype=float)
        sliderunner.write(path, [ImageAnnotations(path.stem + ".tiff", 1000, 1000, None, boxes, ["mitotic figure"] * n)])

    write(tmp_path / "my db.sqlite", 1)  # the neighbour that 'my%20db.sqlite' used to be read as
    write(tmp_path / "my", 3)  # and what 'my#db' / 'my?db' name once the fragment or query is cut off
    write(tmp_path / name, 2)
    images = sliderunner.read(tmp_path / name)
    assert [image.name for image in images] == [name.removesuffix(".sqlite") + ".tiff"] and len(images[0]) == 2
