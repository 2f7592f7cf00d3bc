"""``midog-viewer backup``: a current copy of an open store, written atomically, never onto the store."""

from __future__ import annotations

import hashlib
import os
import resource
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from midog_viewer.review import ReviewStore

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, limit_bytes: int | None = None) -> subprocess.CompletedProcess:
    def limit() -> None:  # files the command writes may not grow past this: a disk that fills up
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, "-m", "midog_viewer", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, preexec_fn=limit if limit_bytes else None)


def _refused(result: subprocess.CompletedProcess, words: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("midog-viewer: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert words in result.stderr and result.stdout == ""


def _digest(*paths: Path) -> list[str | None]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None for p in paths]


@pytest.fixture
def open_store(tmp_path):
    """A store with decisions still in its -wal: another connection stays open, so nothing was checkpointed."""
    db = tmp_path / "reviews.sqlite"
    store = ReviewStore(db, reviewer="alice")
    keep_wal = ReviewStore(db, reviewer="reader")
    slide = store.add_slide("a.tiff", 0.25, 10_000, 10_000)
    run = store.add_detection_run(slide, "m", {})
    boxes = np.array([[i, i, i + 50, i + 50] for i in range(0, 20_000, 10)], dtype=float)
    ids = store.add_detections(run, boxes, np.full(len(boxes), 0.8), ["mitotic figure"] * len(boxes))
    for i in ids[:300].tolist():
        store.decide(i, "accept" if i % 2 else "reject")
    yield db
    keep_wal.close()
    store.close()


def _decisions_in(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
    finally:
        db.close()


def test_backup_of_an_open_store_is_current_and_self_contained(open_store, tmp_path):
    assert Path(f"{open_store}-wal").stat().st_size > 0
    before = _digest(open_store)
    out = tmp_path / "backups" / "monday.sqlite"
    out.parent.mkdir()
    result = _cli("backup", "--db", str(open_store), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "300 decisions" in result.stdout and result.stderr == ""
    assert sorted(p.name for p in out.parent.iterdir()) == ["monday.sqlite"]  # no -wal, no temporary file
    assert _decisions_in(out) == 300
    copy = sqlite3.connect(out)
    assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # the one file holds everything
    copy.close()
    with ReviewStore(out, read_only=True) as restored:
        assert restored.decisions()[-1].reviewer == "alice"
    assert _digest(open_store) == before


def test_backup_replaces_an_older_backup(open_store, tmp_path):
    out = tmp_path / "backup.sqlite"
    out.write_bytes(b"last week's backup")
    assert _cli("backup", "--db", str(open_store), "--out", str(out)).returncode == 0
    assert _decisions_in(out) == 300


def test_a_failing_backup_leaves_the_older_one_and_nothing_else(open_store, tmp_path):
    folder = tmp_path / "backups"
    folder.mkdir()
    out = folder / "backup.sqlite"
    out.write_bytes(b"last week's backup")
    result = _cli("backup", "--db", str(open_store), "--out", str(out), limit_bytes=256 * 1024)  # the copy is ~1 MB
    _refused(result, "left as it was")
    assert out.read_bytes() == b"last week's backup"
    assert sorted(p.name for p in folder.iterdir()) == ["backup.sqlite"]


def _spellings(db: Path, tmp_path: Path) -> list[Path]:
    linked_folder = tmp_path / "link-to-folder"
    linked_folder.symlink_to(db.parent, target_is_directory=True)
    (tmp_path / "sub").mkdir()
    symlink = tmp_path / "shortcut.sqlite"
    symlink.symlink_to(db)
    hardlink = tmp_path / "sub" / "hard.sqlite"
    os.link(db, hardlink)
    return [
        db, Path(f"{db}-wal"), Path(f"{db}-shm"), tmp_path / "sub" / ".." / db.name, linked_folder / db.name,
        linked_folder / f"{db.name}-wal", symlink, hardlink, Path(os.path.relpath(db, ROOT)),
    ]


def test_backup_never_writes_onto_the_database_or_its_side_files(open_store, tmp_path):
    files = [open_store, Path(f"{open_store}-wal"), Path(f"{open_store}-shm")]
    before = _digest(*files)
    for out in _spellings(open_store, tmp_path):
        _refused(_cli("backup", "--db", str(open_store), "--out", str(out)), "is the review database")
        assert _digest(*files) == before, out
    with ReviewStore(open_store, read_only=True) as store:
        assert len(store.decisions()) == 300


def test_backup_refuses_what_it_cannot_or_must_not_replace(open_store, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    _refused(_cli("backup", "--db", str(open_store), "--out", str(fifo)), "not a regular file")
    _refused(_cli("backup", "--db", str(open_store), "--out", str(tmp_path)), "is a folder")
    _refused(_cli("backup", "--db", str(open_store), "--out", str(tmp_path / "no" / "b.sqlite")), "does not exist")
    in_use = tmp_path / "other.sqlite"
    in_use.write_bytes(b"x")
    Path(f"{in_use}-wal").write_bytes(b"a log that belongs to the old file")
    _refused(_cli("backup", "--db", str(open_store), "--out", str(in_use)), "-wal exists")
    assert in_use.read_bytes() == b"x"


def test_backup_of_a_missing_or_foreign_database_is_refused(tmp_path):
    out = tmp_path / "b.sqlite"
    _refused(_cli("backup", "--db", str(tmp_path / "none.sqlite"), "--out", str(out)), "no review database")
    foreign = tmp_path / "foreign.sqlite"
    db = sqlite3.connect(foreign)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    _refused(_cli("backup", "--db", str(foreign), "--out", str(out)), "not a midog-viewer review store")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.sqlite"]
