"""Output files appear whole or not at all, and never over the review database or anything but a regular file."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from midog_viewer.errors import AnnotationFormatError
from midog_viewer.formats import atomic


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_write_replaces_the_file_keeps_its_mode_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    target.chmod(0o640)
    atomic.write_text(target, "new")
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert listing(tmp_path) == ["out.csv"]


def test_an_error_while_writing_keeps_the_old_file_byte_for_byte(tmp_path):
    target = tmp_path / "out.csv"
    target.write_bytes(b"old contents")
    with pytest.raises(RuntimeError):
        with atomic.open_text(target) as handle:
            handle.write("half of the new" * 10_000)
            raise RuntimeError("killed halfway")
    with pytest.raises(AnnotationFormatError, match=r"cannot write .*out.csv: No space left on device\.$"):
        with atomic.open_binary(target) as handle:
            handle.write(b"x" * 100_000)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert target.read_bytes() == b"old contents" and listing(tmp_path) == ["out.csv"]


def test_without_unnamed_files_a_hidden_named_one_is_used_and_removed(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    target = tmp_path / "out.json"
    atomic.write_text(target, "{}")
    with pytest.raises(RuntimeError):
        with atomic.open_text(target) as handle:
            handle.write("[")
            assert len(listing(tmp_path)) == 2  # the hidden temporary file, while writing
            raise RuntimeError
    assert target.read_text() == "{}" and listing(tmp_path) == ["out.json"]


def test_a_temporary_file_a_killed_writer_left_is_swept_by_the_next_write(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    stale = tmp_path / f".out.csv.{pid}-0123abcd.midog-tmp.csv"
    live = tmp_path / f".out.csv.{os.getpid()}-89abcdef.midog-tmp.csv"
    other = tmp_path / f".other.csv.{pid}-0123abcd.midog-tmp.csv"
    for path in (stale, live, other):
        path.write_text("partial")
    atomic.write_text(tmp_path / "out.csv", "new")
    assert not stale.exists() and live.exists() and other.exists()


def test_the_review_database_is_refused_under_every_spelling(tmp_path):
    db = tmp_path / "r.sqlite"
    db.write_bytes(b"SQLite format 3\0" + b"\1" * 100)
    (tmp_path / "r.sqlite-wal").write_bytes(b"wal")
    (tmp_path / "link.csv").symlink_to(db)
    os.link(db, tmp_path / "hard.csv")
    (tmp_path / "sub").mkdir()
    spellings = [db, tmp_path / "r.sqlite-wal", tmp_path / "r.sqlite-shm", tmp_path / "r.sqlite-journal",
                 tmp_path / "link.csv", tmp_path / "hard.csv", tmp_path / "sub" / ".." / "r.sqlite",
                 os.path.relpath(db)]
    before = db.read_bytes()
    for path in spellings:
        with pytest.raises(AnnotationFormatError, match="is the review database r.sqlite"):
            atomic.write_text(path, "x", atomic.store_files(db))
        with pytest.raises(AnnotationFormatError, match="is the review database r.sqlite"):
            atomic.make_folder(path, atomic.store_files(db))
    (tmp_path / "db-link").symlink_to(db)  # a database opened through a link keeps its -wal beside the real file
    with pytest.raises(AnnotationFormatError, match="is the review database db-link"):
        atomic.write_text(tmp_path / "r.sqlite-wal", "x", atomic.store_files(tmp_path / "db-link"))
    assert db.read_bytes() == before
    assert not (tmp_path / "r.sqlite-shm").exists() and not (tmp_path / "r.sqlite-journal").exists()


def test_only_regular_files_are_replaced(tmp_path, full_device):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    (tmp_path / "folder").mkdir()
    readonly = tmp_path / "locked.csv"
    readonly.write_text("keep")
    readonly.chmod(0o444)
    for path, message in ((fifo, "not a regular file"), (full_device, "not a regular file"),
                          (tmp_path / "folder", "is a folder"), (readonly, "is read-only"),
                          (tmp_path / "missing" / "x.csv", "the folder .*missing does not exist")):
        with pytest.raises(AnnotationFormatError, match=message):
            atomic.write_text(path, "x")
        with pytest.raises(AnnotationFormatError, match=message):
            atomic.replace_file(path, lambda temp: temp.write_text("x"))
    assert stat.S_ISFIFO(fifo.stat().st_mode) and stat.S_ISCHR(os.stat(full_device).st_mode)
    assert readonly.read_text() == "keep"
    assert set(listing(tmp_path)) - {"full-device"} == {"folder", "locked.csv", "pipe"}


def test_a_symlinked_target_is_written_through_and_stays_a_link(tmp_path):
    (tmp_path / "real.csv").write_text("old")
    (tmp_path / "link.csv").symlink_to(tmp_path / "real.csv")
    atomic.write_text(tmp_path / "link.csv", "new")
    assert (tmp_path / "link.csv").is_symlink() and (tmp_path / "real.csv").read_text() == "new"


def test_a_path_taking_writer_keeps_the_suffix_and_fails_cleanly(tmp_path):
    seen = []
    atomic.replace_file(tmp_path / "curve.png", lambda temp: (seen.append(temp.suffix), temp.write_bytes(b"png")))
    assert seen == [".png"] and (tmp_path / "curve.png").read_bytes() == b"png"

    def full(temp):
        temp.write_bytes(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(AnnotationFormatError, match="No space left on device"):
        atomic.replace_file(tmp_path / "curve.png", full)
    assert (tmp_path / "curve.png").read_bytes() == b"png" and listing(tmp_path) == ["curve.png"]
