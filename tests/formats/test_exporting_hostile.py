"""Exports under mistakes: never over the review database, never half a file, never one slide over another."""

from __future__ import annotations

import csv
import errno
import json
import os
import sqlite3
import stat
from pathlib import Path

import numpy as np
import pytest

from midog_viewer.errors import AnnotationFormatError
from midog_viewer.formats import EXPORT_FORMATS
from midog_viewer.review.exporting import export_store
from midog_viewer.review.importing import import_file
from midog_viewer.review import ReviewStore


@pytest.fixture
def store(tmp_path):
    with ReviewStore(tmp_path / "r.sqlite", reviewer="alice") as store:
        for name, x in (("a.tiff", 0), ("a.png", 100), ("b.svs", 200)):
            slide_id = store.add_slide(name, 0.25, 1000, 1000)
            store.add_annotations(slide_id, np.array([[x, 0, x + 50, 50], [x, 60, x + 50, 110]]),
                                  ["mitotic figure", "hard negative"], "gt.json")
        yield store


def _out(tmp_path, fmt):
    return tmp_path / ("out-folder" if fmt == "geojson" else f"out.{fmt}")


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_an_export_onto_the_database_is_refused_and_the_database_stays(store, tmp_path, fmt):
    db = store.path
    (tmp_path / "link").symlink_to(db)
    os.link(db, tmp_path / "hard")
    before = db.read_bytes()
    for target in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"), tmp_path / "link",
                   tmp_path / "hard", tmp_path / "x" / ".." / db.name):
        with pytest.raises(AnnotationFormatError, match="is the review database r.sqlite"):
            export_store(store, fmt, target, selection="all")
    assert db.read_bytes() == before and store.integrity_check() == "ok"
    assert len(store.objects(store.slides()[0].id)) == 2


@pytest.mark.parametrize("fmt", ["csv", "coco", "midog-json", "sliderunner"])
def test_a_full_disk_mid_export_keeps_the_previous_export(store, tmp_path, fmt, monkeypatch):
    out = _out(tmp_path, fmt)
    export_store(store, fmt, out, selection="all")
    previous = out.read_bytes()
    written = []
    real_write = os.fdopen

    class Full:
        """A file whose disk fills after the first 100 bytes."""

        def __init__(self, handle):
            self.handle = handle

        def write(self, data):
            if sum(written) + len(data) > 100:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written.append(len(data))
            return self.handle.write(data)

        def __getattr__(self, name):
            return getattr(self.handle, name)

    monkeypatch.setattr("midog_viewer.formats.atomic.os.fdopen", lambda *a, **k: Full(real_write(*a, **k)))
    real_connect = sqlite3.connect

    class FullDatabase(sqlite3.Connection):
        """SQLite's word for ENOSPC, after the first page of the SlideRunner copy has gone to disk."""

        def backup(self, target, **kwargs):
            def fill(status, remaining, total):
                raise sqlite3.OperationalError("database or disk is full")

            super().backup(target, pages=1, progress=fill)

    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: real_connect(*a, factory=FullDatabase, **k))
    with pytest.raises(AnnotationFormatError, match="No space left on device|database or disk is full"):
        export_store(store, fmt, out, selection="reviewed")
    assert out.read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, "r.sqlite", "r.sqlite-wal", "r.sqlite-shm"])


def test_a_failed_sliderunner_export_leaves_nothing_behind(store, tmp_path, full_device):
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "taken.sqlite").mkdir()  # a folder where the file should go: the old code left taken.sqlite.partial
    os.mkfifo(folder / "pipe.sqlite")  # the old code replaced the FIFO (or, as root, a device) with its file
    for target, message in ((folder / "taken.sqlite", "is a folder"), (folder / "pipe.sqlite", "not a regular file"),
                            (full_device, "not a regular file")):
        with pytest.raises(AnnotationFormatError, match=message):
            export_store(store, "sliderunner", target)
    assert sorted(p.name for p in folder.iterdir()) == ["pipe.sqlite", "taken.sqlite"]
    assert stat.S_ISFIFO((folder / "pipe.sqlite").stat().st_mode) and stat.S_ISCHR(os.stat(full_device).st_mode)


def test_geojson_folder_keeps_slides_with_the_same_stem_apart(store, tmp_path):
    summary = export_store(store, "geojson", tmp_path / "gj")
    files = sorted(p.name for p in (tmp_path / "gj").iterdir())
    assert files == ["a.png.geojson", "a.tiff.geojson", "b.geojson"] and summary.slides == 3
    firsts = {name: json.loads((tmp_path / "gj" / name).read_text())["features"][0]["geometry"]["coordinates"][0][0]
              for name in files}
    assert firsts == {"a.tiff.geojson": [0.0, 0.0], "a.png.geojson": [100.0, 0.0], "b.geojson": [200.0, 0.0]}
    with ReviewStore(tmp_path / "back.sqlite") as back:  # each file goes back to its own slide
        for name in ("a.tiff", "a.png", "b.svs"):
            back.add_slide(name)
        for name in files:
            import_file(back, tmp_path / "gj" / name)
        for name, x in (("a.tiff", 0), ("a.png", 100), ("b.svs", 200)):
            assert back.objects(back.find_slide(name).id).x1.tolist() == [x, x]


def test_geojson_names_stay_distinct_even_for_same_named_slides_and_case(tmp_path):
    with ReviewStore(tmp_path / "r.sqlite") as store:
        for path in ("one/A.tiff", "two/A.tiff", "a.PNG", "A.tiff.png"):
            store.add_slide(tmp_path / path, 0.25, 10, 10)
        export_store(store, "geojson", tmp_path / "gj")
    names = sorted(p.name.lower() for p in (tmp_path / "gj").iterdir())
    assert len(names) == len(set(names)) == 4


def test_output_to_a_missing_or_occupied_location_is_one_clear_error(store, tmp_path):
    (tmp_path / "file.txt").write_text("keep")
    for fmt in EXPORT_FORMATS:
        target = tmp_path / "missing" / ("x" if fmt == "geojson" else "x.out")
        if fmt == "geojson":
            target = tmp_path / "file.txt" / "x"
        with pytest.raises(AnnotationFormatError) as caught:
            export_store(store, fmt, target)
        assert "\n" not in str(caught.value)
    with pytest.raises(AnnotationFormatError, match="not a folder"):
        export_store(store, "geojson", tmp_path / "file.txt")
    assert (tmp_path / "file.txt").read_text() == "keep"


def test_an_overwritten_csv_export_is_complete(store, tmp_path):
    out = tmp_path / "o.csv"
    out.write_text("stale\n" * 1000)
    export_store(store, "csv", out)
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 6 and {r["slide"] for r in rows} == {"a.tiff", "a.png", "b.svs"}


def test_same_named_slides_of_different_folders_keep_their_objects_in_every_format(tmp_path):
    """Two ``001.png`` slides: each format names them apart (GeoJSON's rule), and each imports back whole."""
    with ReviewStore(tmp_path / "r.sqlite") as store:
        for folder, x in (("one", 0), ("two", 500)):
            slide_id = store.add_slide(tmp_path / folder / "001.png", 0.25, 1000, 1000)
            store.add_annotations(slide_id, np.array([[x, 0, x + 50, 50]]), ["mitotic figure"], "gt.json")
        ids = [slide.id for slide in store.slides()]
        expected = {f"001.png.{ids[0]}": [0.0], f"001.png.{ids[1]}": [500.0]}
        summary = export_store(store, "midog-json", tmp_path / "pred.json")
        doc = json.loads((tmp_path / "pred.json").read_text())
        assert summary.slides == len(doc) == 2
        assert {name: [p["point"][0] * 1000 / 0.25 for p in case["points"]] for name, case in doc.items()} \
            == {name: [x + 25] for name, (x,) in expected.items()}
        for fmt, name in (("coco", "o.json"), ("sliderunner", "o.sqlite"), ("csv", "o.csv")):
            export_store(store, fmt, tmp_path / name)
            with ReviewStore(tmp_path / f"back-{fmt}.sqlite") as back:
                import_file(back, tmp_path / name)
                got = {slide.name: back.objects(slide.id).x1.tolist() for slide in back.slides()}
            assert got == expected, fmt
