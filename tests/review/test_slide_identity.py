"""A slide is known by its content: moved, renamed, copied or touched files find their review; changed ones say so."""

from __future__ import annotations

import os
import shutil
import sqlite3

import numpy as np
import pytest
import tifffile

from midog_viewer.io import open_slide
from midog_viewer.io import fingerprint as fingerprint_module
from midog_viewer.io.fingerprint import file_fingerprint, slide_fingerprint
from midog_viewer.review import ReviewStore
from midog_viewer.review.schema import _SCHEMA_V1, SCHEMA_VERSION, split_sql
from midog_viewer.review.slide_identity import CHANGED, COPIED, MOVED, NEW, SAME, TOUCHED

BOX = [100.0, 100.0, 150.0, 150.0]


def write_slide(path, seed: int = 0):
    """A small tiled RGB TIFF whose pixels depend on ``seed``."""
    pixels = np.random.default_rng(seed).integers(0, 256, (512, 384, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, pixels, photometric="rgb", tile=(128, 128), compression="zlib", metadata=None)
    return path


def reviewed(store, path):
    """Link a slide and leave one hand-added mitosis on it; return its id."""
    link = store.link_slide(path, 0.25, 384, 512)
    assert link.how == NEW
    store.add_annotation(link.slide_id, BOX, "mitotic figure")
    return link.slide_id


@pytest.fixture
def store(tmp_path):
    with ReviewStore(tmp_path / "reviews.sqlite", reviewer="alice") as s:
        yield s


def test_fingerprint_is_content_not_name(tmp_path):
    a = write_slide(tmp_path / "a.tiff")
    b = write_slide(tmp_path / "elsewhere" / "b.tiff")
    c = write_slide(tmp_path / "c.tiff", seed=1)
    assert file_fingerprint(a) == file_fingerprint(b) != file_fingerprint(c)
    assert file_fingerprint(tmp_path / "missing.tiff") is None
    (tmp_path / "text.tiff").write_text("no slide")
    assert file_fingerprint(tmp_path / "text.tiff") is None


def test_a_moved_slide_finds_its_review_and_its_path_follows(store, tmp_path):
    old = write_slide(tmp_path / "a.tiff")
    slide_id = reviewed(store, old)
    new = tmp_path / "archive" / "renamed.tiff"
    new.parent.mkdir()
    old.rename(new)
    link = store.link_slide(new, 0.25, 384, 512)
    assert (link.slide_id, link.how, link.previous_path) == (slide_id, MOVED, str(old.resolve()))
    assert link.message() == f"found the review of renamed.tiff (moved from {old.resolve()})"
    assert store.slide(slide_id).path == str(new.resolve()) and store.slide(slide_id).name == "renamed.tiff"
    assert len(store.objects(slide_id)) == 1
    assert store.link_slide(new).how == SAME  # from now on the path alone matches


def test_a_touched_slide_keeps_its_review_quietly(store, tmp_path):
    path = write_slide(tmp_path / "a.tiff")
    slide_id = reviewed(store, path)
    stat = path.stat()
    os.utime(path, (stat.st_atime + 100, stat.st_mtime + 100))
    link = store.link_slide(path)
    assert (link.slide_id, link.how, link.message()) == (slide_id, TOUCHED, "")
    assert len(store.slides()) == 1


def test_a_slide_copied_to_another_disk_and_touched_finds_the_review_once_the_old_disk_is_gone(store, tmp_path):
    original = write_slide(tmp_path / "share" / "a.tiff")
    slide_id = reviewed(store, original)
    copy = tmp_path / "usb" / "a.tiff"
    copy.parent.mkdir()
    shutil.copy(original, copy)  # a new modification time
    os.utime(copy, (1e9, 1e9))
    shutil.rmtree(original.parent)  # the share is not mounted any more
    link = store.link_slide(copy)
    assert (link.slide_id, link.how) == (slide_id, MOVED)
    assert link.message() == f"found the review of a.tiff (moved from {original.resolve()})"
    assert len(store.slides()) == 1 and len(store.objects(slide_id)) == 1


def test_a_copy_beside_its_original_gets_its_own_review_and_names_the_original(store, tmp_path):
    """Two files, two reviews (as two same-named slides in two folders are); never silently: the link says so."""
    original = write_slide(tmp_path / "a" / "a.tiff")
    slide_id = reviewed(store, original)
    copy = tmp_path / "b" / "a.tiff"
    copy.parent.mkdir()
    shutil.copy(original, copy)
    link = store.link_slide(copy)
    assert link.how == COPIED and link.slide_id != slide_id and link.earlier_id == slide_id
    assert str(original.resolve()) in link.message() and f"slide id {slide_id}" in link.message()
    assert store.slide(slide_id).path == str(original.resolve())  # the original keeps its review
    assert store.link_slide(original).slide_id == slide_id and store.link_slide(copy).slide_id == link.slide_id


def test_same_path_different_content_is_reported_and_the_old_review_kept(store, tmp_path):
    path = write_slide(tmp_path / "a.tiff")
    slide_id = reviewed(store, path)
    write_slide(path, seed=7)  # another scan saved over it
    link = store.link_slide(path)
    assert link.how == CHANGED and link.slide_id != slide_id and link.earlier_id == slide_id
    assert "different content" in link.message() and f"slide id {slide_id}" in link.message()
    assert len(store.objects(link.slide_id)) == 0
    assert len(store.objects(slide_id)) == 1  # the earlier review is still there, under its own id


def test_same_name_different_content_after_the_original_went_is_reported(store, tmp_path):
    old = write_slide(tmp_path / "a" / "001.tiff")
    slide_id = reviewed(store, old)
    old.unlink()
    other = write_slide(tmp_path / "b" / "001.tiff", seed=3)
    link = store.link_slide(other)
    assert link.how == CHANGED and link.earlier_id == slide_id and str(old.resolve()) in link.message()


def test_two_different_slides_of_one_name_in_two_folders_are_two_slides(store, tmp_path):
    first = reviewed(store, write_slide(tmp_path / "a" / "001.tiff"))
    link = store.link_slide(write_slide(tmp_path / "b" / "001.tiff", seed=2))
    assert link.how == NEW and link.slide_id != first and link.message() == ""


def test_a_known_file_costs_no_fingerprint(store, tmp_path, monkeypatch):
    path = write_slide(tmp_path / "a.tiff")
    reviewed(store, path)
    calls = []
    monkeypatch.setattr(fingerprint_module, "file_fingerprint", lambda p: calls.append(p))
    assert store.link_slide(path).how == SAME
    assert calls == []


def test_an_older_store_is_migrated_and_its_slides_get_fingerprints_when_opened(tmp_path):
    path = write_slide(tmp_path / "a.tiff")
    db_path = tmp_path / "v1.sqlite"
    raw = sqlite3.connect(db_path)
    for statement in split_sql(_SCHEMA_V1):
        raw.execute(statement)
    raw.execute("INSERT INTO schema_version VALUES (1)")
    st = path.stat()
    raw.execute(
        "INSERT INTO slides(path, name, size_bytes, mtime, added_at, added_by) VALUES (?, 'a.tiff', ?, ?, 'then', 'bob')",
        (str(path.resolve()), st.st_size, st.st_mtime),
    )
    raw.commit()
    raw.close()
    with ReviewStore(db_path, reviewer="alice") as store:
        assert store._db.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION == 3
        assert store.link_slide(path).how == SAME and store.slide(1).path == str(path.resolve())
        stored = store._db.execute("SELECT fingerprint FROM slides WHERE id = 1").fetchone()[0]
        assert stored == file_fingerprint(path)
        moved = tmp_path / "moved.tiff"
        path.rename(moved)
        link = store.link_slide(moved)
        assert (link.how, link.slide_id) == (MOVED, 1)


def test_an_older_row_without_fingerprint_follows_a_move_by_name_and_size(tmp_path):
    """A file moved before its store learned fingerprints: same name and size, old file gone, is the best evidence."""
    path = write_slide(tmp_path / "a" / "a.tiff")
    with ReviewStore(tmp_path / "r.sqlite") as store:
        slide_id = store.link_slide(path).slide_id
        store._db.execute("UPDATE slides SET fingerprint = NULL")
        moved = tmp_path / "b" / "a.tiff"
        moved.parent.mkdir()
        path.rename(moved)
        link = store.link_slide(moved)
        assert (link.slide_id, link.how) == (slide_id, MOVED)


def test_the_real_svs_moved_finds_its_review(shared_data, tmp_path, store):
    source = shared_data / "slides" / "CMU-1-Small-Region.svs"
    first = tmp_path / "CMU-1-Small-Region.svs"
    shutil.copy(source, first)
    with open_slide(first) as slide:
        assert slide_fingerprint(slide) == file_fingerprint(source)
        link = store.link_slide(first, slide.mpp, slide.width, slide.height)
    store.add_annotation(link.slide_id, BOX, "mitotic figure")
    moved = tmp_path / "cases" / "2026-001.svs"
    moved.parent.mkdir()
    first.rename(moved)
    again = store.link_slide(moved)
    assert (again.slide_id, again.how) == (link.slide_id, MOVED)
    assert len(store.objects(again.slide_id)) == 1


def test_cli_counts_finds_a_renamed_slide_by_content(tmp_path):
    import subprocess
    import sys

    old = write_slide(tmp_path / "a.tiff")
    with ReviewStore(tmp_path / "reviews.sqlite", reviewer="alice") as store:
        reviewed(store, old)
    new = tmp_path / "case-17.tiff"
    old.rename(new)
    done = subprocess.run([sys.executable, "-m", "midog_viewer", "counts", "--db", str(tmp_path / "reviews.sqlite"),
                           "--slide", str(new)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"found the review of case-17.tiff (stored as {old.resolve()})" in done.stdout
    assert "a.tiff: 1 mitoses" in done.stdout
