"""A safe copy of a review store, taken while it may be open: SQLite's online backup, written atomically.

A plain ``cp reviews.sqlite`` misses what still sits in ``reviews.sqlite-wal``; the backup API copies one
consistent snapshot of the database with its log. The copy goes to a temporary file in the target's
folder, is checked, fsynced and only then renamed over the target, so a kill or a full disk leaves the
previous backup untouched and nothing new in the folder.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

from midog_viewer.errors import ReviewStoreError
from midog_viewer.review.connection import SIDE_FILES, primary_code, refuse_database_target
from midog_viewer.review.store import ReviewStore


@dataclass(frozen=True)
class BackupSummary:
    """What a backup holds."""

    path: Path
    slides: int
    decisions: int
    size_bytes: int


def _check_target(db_path: Path, out: Path) -> Path:
    """The real file the backup replaces; refuses the database itself and anything not a regular file."""
    refuse_database_target(out, db_path)
    target = Path(os.path.realpath(out))
    if target.is_dir():
        raise ReviewStoreError(f"{out} is a folder; give the backup's file name.")
    if target.exists() and not target.is_file():
        raise ReviewStoreError(f"{out} exists and is not a regular file; it is left alone.")
    if not target.parent.is_dir():
        raise ReviewStoreError(f"the folder {target.parent} does not exist.")
    for end in SIDE_FILES:
        if Path(f"{target}{end}").exists():  # replacing the file would pair the new copy with a stale log
            raise ReviewStoreError(
                f"{target}{end} exists: {out} is open or was not closed cleanly; choose another name."
            )
    return target


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy(store: ReviewStore, partial: Path, out: Path) -> tuple[int, int]:
    """Back the store up into ``partial`` as one self-contained file (no -wal); return (slides, decisions)."""
    try:
        copy = sqlite3.connect(partial, isolation_level=None)
        try:
            store.copy_into(copy)
            copy.execute("PRAGMA journal_mode = DELETE")
            check = copy.execute("PRAGMA quick_check").fetchone()[0]
            counts = copy.execute("SELECT (SELECT COUNT(*) FROM slides), (SELECT COUNT(*) FROM decisions)").fetchone()
        finally:
            copy.close()
    except sqlite3.Error as exc:
        if primary_code(exc) == "FULL":
            raise ReviewStoreError(f"the disk holding {out} is full; {out} was left as it was.") from exc
        raise ReviewStoreError(f"cannot back up {store.path} to {out}: {exc}; {out} was left as it was.") from exc
    if check != "ok":
        raise ReviewStoreError(f"the copy of {store.path} does not check out ({check}); {out} was left as it was.")
    return int(counts[0]), int(counts[1])


def backup_store(db_path: str | os.PathLike, out: str | os.PathLike) -> BackupSummary:
    """Copy the review store at ``db_path`` to ``out`` (replaced atomically); the source is only read."""
    db_path, out = Path(db_path), Path(out)
    target = _check_target(db_path, out)
    with ReviewStore(db_path, read_only=True) as store:
        try:
            fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
        except OSError as exc:
            raise ReviewStoreError(f"cannot write in {target.parent}: {exc.strerror}.") from exc
        os.close(fd)
        partial = Path(name)
        try:
            slides, decisions = _copy(store, partial, out)
            _fsync(partial)
            os.replace(partial, target)
        except OSError as exc:
            raise ReviewStoreError(f"cannot write the backup {out}: {exc.strerror or exc}.") from exc
        finally:
            for leftover in (partial, *(Path(f"{partial}{end}") for end in SIDE_FILES)):
                leftover.unlink(missing_ok=True)
    try:
        _fsync(target.parent, directory=True)
    except OSError:
        pass  # some file systems cannot fsync a folder; the rename itself is atomic
    return BackupSummary(target, slides, decisions, target.stat().st_size)
