"""Opening a review file, its transactions, checkpoints, and SQLite's errors in one line each.

* Read-write: an existing file is first checked read-only (``mode=ro``), so another tool's SQLite file
  given by mistake is refused byte-identical, before WAL mode or the schema could touch it.
* Read-only (exports, counts): ``mode=ro``, or ``immutable=1`` when the folder is read-only and holds no
  write-ahead log (then nothing can be writing), so a store on a read-only disk can still be read.
* Every ``sqlite3.Error`` becomes one :class:`~midog_viewer.errors.ReviewStoreError` line naming the first
  error (a full disk, a read-only file, a lock held too long), never the rollback that follows it.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode

from midog_viewer.errors import AnnotationFormatError, ReviewStoreError
from midog_viewer.formats.atomic import SIDE_FILES  # noqa: F401 (the one list; backup imports it from here)
from midog_viewer.review.schema import SCHEMA_VERSION, migrate, schema_version

#: How long a write waits for another program's lock before giving up (seconds).
BUSY_TIMEOUT_S = 10.0
_DURABILITY = {"normal": "NORMAL", "full": "FULL"}

_BY_MESSAGE = (
    ("database or disk is full", "FULL"),
    ("readonly database", "READONLY"),
    ("database is locked", "BUSY"),
    ("database table is locked", "LOCKED"),
    ("unable to open database file", "CANTOPEN"),
    ("file is not a database", "NOTADB"),
    ("malformed", "CORRUPT"),
    ("disk i/o error", "IOERR"),
)


def primary_code(exc: sqlite3.Error) -> str:
    """SQLite's primary result name without the prefix ("FULL", "READONLY", …), or ""."""
    name = getattr(exc, "sqlite_errorname", None)  # Python 3.11+
    if name and name.startswith("SQLITE_"):
        return name.split("_")[1]
    message = str(exc).lower()
    return next((code for text, code in _BY_MESSAGE if text in message), "")


def store_error(exc: sqlite3.Error, path: Path) -> ReviewStoreError:
    """One line saying what went wrong with the review file, from SQLite's first error."""
    code = primary_code(exc)
    if code == "FULL":
        return ReviewStoreError(f"the disk holding {path} is full; the last change was not saved.")
    if code == "READONLY":
        return ReviewStoreError(f"{path} is read-only (the file or its folder cannot be written); nothing was saved.")
    if code in ("BUSY", "LOCKED"):
        return ReviewStoreError(
            f"{path} is locked by another program (waited {BUSY_TIMEOUT_S:g} s); nothing was saved, try again."
        )
    if code == "CANTOPEN":
        return ReviewStoreError(f"cannot open {path}, or create its -wal and -shm files next to it.")
    if code in ("NOTADB", "CORRUPT"):
        return ReviewStoreError(f"{path} is not a usable review database ({exc}).")
    if code == "IOERR":
        return ReviewStoreError(f"cannot read or write {path}: {exc} (a full, removed or failing disk?).")
    return ReviewStoreError(f"review database {path}: {exc}.")


@contextmanager
def translated(path: Path) -> Iterator[None]:
    """Turn any ``sqlite3.Error`` raised inside into one :func:`store_error` line."""
    try:
        yield
    except sqlite3.Error as exc:
        raise store_error(exc, path) from exc


def database_uri(path: Path, **params: str) -> str:
    """A ``file:`` URI of ``path`` with query parameters; ``%``, ``#`` and ``?`` in names are quoted."""
    return Path(os.path.abspath(path)).as_uri() + "?" + urlencode(params)


def _connect(target: str, uri: bool) -> sqlite3.Connection:
    db = sqlite3.connect(target, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False, uri=uri)
    db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    return db


def _has_wal(path: Path) -> bool:
    try:
        return Path(f"{path}-wal").stat().st_size > 0
    except OSError:
        return False


def open_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection to an existing, current review file (nothing on disk changes)."""
    if not path.is_file():
        raise ReviewStoreError(f"there is no review database at {path}.")
    attempts = [{"mode": "ro"}]
    if not os.access(path.parent, os.W_OK) and not _has_wal(path):
        attempts.append({"mode": "ro", "immutable": "1"})  # cannot create -shm, and no log to read
    for i, params in enumerate(attempts):
        db = _connect(database_uri(path, **params), uri=True)
        try:
            version = schema_version(db, path)
        except sqlite3.Error as exc:
            db.close()
            if i + 1 < len(attempts) and primary_code(exc) == "CANTOPEN":
                continue
            if primary_code(exc) == "CANTOPEN" and _has_wal(path):
                raise ReviewStoreError(
                    f"cannot open {path}: its write-ahead log needs a -shm file its read-only folder cannot hold; "
                    f"copy {path.name} with {path.name}-wal to a writable folder to read it."
                ) from exc
            raise store_error(exc, path) from exc
        except BaseException:
            db.close()
            raise
        if version != SCHEMA_VERSION:
            db.close()
            what = "an empty database" if version == 0 else f"schema version {version}"
            raise ReviewStoreError(f"{path} is {what}; open it once with write access to bring it up to date.")
        db.execute("PRAGMA query_only = ON")
        return db
    raise AssertionError("unreachable")  # pragma: no cover


def _check_existing(path: Path) -> None:
    """Refuse a file that is not a review store, reading only: it stays byte-identical."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    db = _connect(database_uri(path, mode="ro"), uri=True)
    try:
        with translated(path):
            schema_version(db, path)
    finally:
        db.close()


def open_read_write(path: Path, durability: str) -> sqlite3.Connection:
    """A connection in WAL mode to a review file, created or brought up to the current schema."""
    if durability not in _DURABILITY:
        raise ReviewStoreError(f"durability must be 'normal' or 'full', not {durability!r}.")
    if not path.parent.is_dir():
        raise ReviewStoreError(f"the folder {path.parent} does not exist.")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ReviewStoreError(f"{path} is read-only (or its folder is): it can be read (export, counts), not changed.")
    _check_existing(path)
    with translated(path):
        db = _connect(str(path), uri=False)
    try:
        with translated(path):
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise ReviewStoreError(f"{path} cannot use a write-ahead log (journal mode {mode}).")
            db.execute(f"PRAGMA synchronous = {_DURABILITY[durability]}")
            db.execute("PRAGMA foreign_keys = ON")
            if schema_version(db, path) != SCHEMA_VERSION:
                db.execute("BEGIN IMMEDIATE")
                try:
                    migrate(db, path)
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
    except BaseException:
        db.close()
        raise
    return db


class Transaction:
    """BEGIN IMMEDIATE … COMMIT under a lock; nested uses join the outer transaction.

    Any SQLite error inside, or at COMMIT, is reported as itself in one line: the ROLLBACK after it is
    only tried while a transaction is still open (SQLite rolls back by itself on a full disk).
    """

    def __init__(self, owner: TransactionOwner):
        self.owner = owner

    def __enter__(self) -> sqlite3.Connection:
        owner = self.owner
        if owner.read_only:
            raise ReviewStoreError(f"{owner.path} was opened read-only; nothing can be written to it.")
        owner._lock.acquire()
        if owner._depth == 0:
            try:
                with translated(owner.path):
                    owner._db.execute("BEGIN IMMEDIATE")
            except BaseException:
                owner._lock.release()
                raise
        owner._depth += 1
        return owner._db

    def __exit__(self, exc_type, exc, tb) -> None:
        owner = self.owner
        owner._depth -= 1
        try:
            if owner._depth > 0:
                return
            if exc_type is None:
                try:
                    owner._db.execute("COMMIT")
                except sqlite3.Error as commit_error:
                    _quiet_rollback(owner._db)
                    raise store_error(commit_error, owner.path) from commit_error
                owner._last_write = time.monotonic()
                owner._unsaved = True
                return
            _quiet_rollback(owner._db)
            if isinstance(exc, sqlite3.Error):
                raise store_error(exc, owner.path) from exc
        finally:
            owner._lock.release()


class TransactionOwner:
    """What :class:`Transaction` needs of its store (the store sets these in ``__init__``)."""

    path: Path
    read_only: bool
    _db: sqlite3.Connection
    _lock: threading.RLock
    _depth: int
    _last_write: float
    _unsaved: bool


def _quiet_rollback(db: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open; a failing rollback must not hide the first error."""
    if db.in_transaction:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def checkpoint(db: sqlite3.Connection, path: Path) -> bool:
    """Copy the write-ahead log into the database file without waiting for anyone; True when all of it went.

    Afterwards the database file alone holds every committed change, so copying it gives a current copy.
    """
    with translated(path):
        busy, log_frames, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return not busy and log_frames == copied


def refuse_database_target(out: str | os.PathLike, db_path: str | os.PathLike) -> None:
    """Refuse an output path that is the review database or one of its -wal/-shm/-journal files.

    One rule for every writer (exports, backups, the dock's buttons): :func:`midog_viewer.formats.atomic.
    refuse_protected` compares resolved names and, for files that exist, device and inode.
    """
    from midog_viewer.formats import atomic

    try:
        atomic.refuse_protected(out, atomic.store_files(db_path))
    except AnnotationFormatError as exc:
        raise ReviewStoreError(str(exc)) from None
