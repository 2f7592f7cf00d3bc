"""SlideRunner databases: written with MIDOG.sqlite's schema, read back to the same boxes."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from midog_viewer.errors import AnnotationFormatError
from midog_viewer.formats import sliderunner
from midog_viewer.formats.records import ImageAnnotations

IMAGES = [
    ImageAnnotations("a.tiff", 1000, 800, None, np.array([[0, 0, 50, 50], [100.5, 100.5, 150.5, 150.5]]),
                     ["mitotic figure", "hard negative"]),
    ImageAnnotations("b.tiff", None, None, None, np.zeros((0, 4)), []),
]


def schema(path):
    db = sqlite3.connect(path)
    rows = db.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name").fetchall()
    db.close()
    return [(kind, name, " ".join(sql.split())) for kind, name, sql in rows]


def test_written_schema_is_midog_sqlite_schema(shared_data, tmp_path):
    sliderunner.write(tmp_path / "out.sqlite", IMAGES)
    assert schema(tmp_path / "out.sqlite") == schema(shared_data / "annotations" / "MIDOG.sqlite")


def test_round_trip_as_centre_spots(tmp_path):
    sliderunner.write(tmp_path / "out.sqlite", IMAGES, person="alice")
    back = sliderunner.read(tmp_path / "out.sqlite")
    assert [i.name for i in back] == ["a.tiff", "b.tiff"]
    np.testing.assert_array_equal(back[0].boxes, IMAGES[0].boxes)
    assert back[0].labels == IMAGES[0].labels and (back[0].width, back[0].height) == (1000, 800)
    db = sqlite3.connect(tmp_path / "out.sqlite")
    assert db.execute("SELECT name FROM Persons").fetchall() == [("alice",)]
    assert db.execute("SELECT name FROM Classes ORDER BY uid").fetchall() == [("mitotic figure",), ("not mitotic figure",)]
    assert db.execute("SELECT COUNT(*) FROM Annotations WHERE guid IS NULL").fetchone()[0] == 0  # triggers ran
    db.close()


def test_rewrite_replaces_the_file(tmp_path):
    sliderunner.write(tmp_path / "out.sqlite", IMAGES)
    sliderunner.write(tmp_path / "out.sqlite", IMAGES[:1])
    assert len(sliderunner.read(tmp_path / "out.sqlite")) == 1


def test_faults_name_the_row(tmp_path):
    sliderunner.write(tmp_path / "out.sqlite", IMAGES)
    db = sqlite3.connect(tmp_path / "out.sqlite")
    db.create_function("pycurrent_time", 0, lambda: 0.0)
    db.execute("UPDATE Annotations_coordinates SET coordinateX = 'left' WHERE uid = 2")
    db.commit()
    db.close()
    with pytest.raises(AnnotationFormatError, match="uid=2 has coordinateX 'left'"):
        sliderunner.read(tmp_path / "out.sqlite")
    (tmp_path / "junk.sqlite").write_bytes(b"garbage" * 500)
    with pytest.raises(AnnotationFormatError, match="not a readable SlideRunner database"):
        sliderunner.read(tmp_path / "junk.sqlite")
    other = sqlite3.connect(tmp_path / "other.sqlite")
    other.execute("CREATE TABLE Slides (uid INTEGER)")
    other.close()
    with pytest.raises(AnnotationFormatError, match="table Slides lacks"):
        sliderunner.read(tmp_path / "other.sqlite")


class _Python310Connection(sqlite3.Connection):
    """A connection as Python 3.10 has it: no ``serialize``."""

    def __getattribute__(self, name):
        if name == "serialize":
            raise AttributeError(name)
        return super().__getattribute__(name)


def test_write_needs_no_serialize_which_python_3_10_lacks(tmp_path, monkeypatch):
    real_connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: real_connect(*a, factory=_Python310Connection, **k))
    (tmp_path / "out.sqlite").write_bytes(b"old")
    sliderunner.write(tmp_path / "out.sqlite", IMAGES)
    monkeypatch.undo()
    images = sliderunner.read(tmp_path / "out.sqlite")
    assert [image.name for image in images] == ["a.tiff", "b.tiff"] and len(images[0]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.sqlite"]  # no journal, no temporary file


def test_a_failed_copy_leaves_the_old_file_and_nothing_else(tmp_path, monkeypatch):
    class FailingBackup(_Python310Connection):  # the backup path, as Python 3.10 takes it
        def backup(self, *args, **kwargs):
            raise sqlite3.OperationalError("database or disk is full")

    real_connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: real_connect(*a, factory=FailingBackup, **k))
    (tmp_path / "out.sqlite").write_bytes(b"old")
    with pytest.raises(AnnotationFormatError, match="disk is full"):
        sliderunner.write(tmp_path / "out.sqlite", IMAGES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.sqlite"]
    assert (tmp_path / "out.sqlite").read_bytes() == b"old"
