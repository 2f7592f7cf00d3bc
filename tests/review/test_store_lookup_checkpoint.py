"""Finding a slide by path or name, and a checkpoint that a reader held back being tried again."""

from __future__ import annotations

import shutil
import sqlite3

import numpy as np
import pytest

from midog_viewer.errors import ReviewStoreError
from midog_viewer.review import ReviewStore


def test_find_slide_prefers_the_exact_path_and_refuses_a_name_several_slides_share(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "001.png").write_bytes(folder.encode())
    with ReviewStore(tmp_path / "r.sqlite") as store:
        first = store.add_slide(tmp_path / "a" / "001.png")
        second = store.add_slide(tmp_path / "b" / "001.png")
        single = store.add_slide("002.png", name_only=True)
        assert store.find_slide(str((tmp_path / "b" / "001.png").resolve())).id == second  # the old code gave a
        assert store.find_slide(str((tmp_path / "a" / "001.png").resolve())).id == first
        assert store.find_slide("002.png").id == single
        assert store.find_slide("003.png") is None
        with pytest.raises(ReviewStoreError) as refused:
            store.find_slide("001.png")
        message = str(refused.value)
        assert "\n" not in message and "2 slides" in message and "give the full path" in message
        assert str((tmp_path / "a" / "001.png").resolve()) in message and str((tmp_path / "b" / "001.png").resolve()) in message


def test_a_path_registered_twice_because_the_file_changed_is_refused_saying_so(tmp_path):
    image = tmp_path / "001.png"
    image.write_bytes(b"first")
    with ReviewStore(tmp_path / "r.sqlite") as store:
        store.add_slide(image)
        image.write_bytes(b"second, longer")  # another size: another slide
        store.add_slide(image)
        with pytest.raises(ReviewStoreError, match="the file changed after it was first opened"):
            store.find_slide(str(image.resolve()))


def _decide_some(store, slide_id, n):
    run = store.add_detection_run(slide_id, "m", {})
    boxes = np.array([[i, i, i + 10, i + 10] for i in range(n)], float)
    for detection in store.add_detections(run, boxes, [0.9] * n, ["mitotic figure"] * n):
        store.decide(int(detection), "accept")


def test_a_checkpoint_a_reader_held_back_is_retried_when_idle(tmp_path):
    db = tmp_path / "r.sqlite"
    with ReviewStore(db) as store:
        slide_id = store.add_slide("s.png", name_only=True)
        _decide_some(store, slide_id, 3)
        reader = sqlite3.connect(db, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM decisions").fetchone()  # a snapshot without what comes next
        _decide_some(store, slide_id, 4)
        assert store.checkpoint_if_idle(0.0) is True
        assert store.checkpoint() is False  # the reader's snapshot keeps the last frames in the WAL
        reader.execute("COMMIT")
        reader.close()
        assert store.checkpoint_if_idle(0.0) is True  # the old code had marked it saved: never tried again
        assert store.checkpoint_if_idle(0.0) is False  # complete now: nothing left to do
        shutil.copy(db, tmp_path / "copy.sqlite")  # the main file alone, without its -wal
        copy = sqlite3.connect(tmp_path / "copy.sqlite")
        try:
            assert copy.execute("SELECT COUNT(*) FROM decisions").fetchone()[0] == 7
        finally:
            copy.close()
