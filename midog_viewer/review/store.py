"""The review store: one SQLite file holding slides, detections, annotations and every decision.

A pathologist's decisions are the product's most valuable data, so the store is built around an
append-only decision log: every accept, reject, relabel, add or delete is one row saying who decided what
and when (UTC), committed in its own transaction before the call returns. Undo and redo append rows that
point at the row they undo or redo; nothing in the log is ever updated or deleted (triggers refuse it).
The current state of each object is derived from the log; ``object_state`` caches it, written in the
same transaction as the log row, and :meth:`ReviewStore.rebuild_state` recomputes it from the log alone.

Durability: WAL journal with ``synchronous=NORMAL`` by default. A commit then writes the WAL without an
fsync, so a decision survives the process being killed (SIGKILL, a GUI crash) the moment ``decide``
returns, and one decision costs well under a millisecond; only an operating-system crash or power cut
can lose the last commits since the previous checkpoint. ``durability="full"`` (``synchronous=FULL``)
fsyncs every commit for power-cut safety at the disk's fsync cost. A reader in another process sees
every committed decision while the writer goes on (WAL readers never block the writer).

Schema (version 1; ``schema_version`` holds the version, :data:`_MIGRATIONS` upgrades older files)::

    slides(id, path, name, size_bytes, mtime, mpp, width, height, added_at, added_by)
        path is absolute, or a bare file name for a slide registered by an import; name is the file
        name imports match on; size_bytes + mtime identify the file version (NULL when not on disk).
    detection_runs(id, slide_id, model, params JSON, created_at, created_by)
    detections(id, run_id, slide_id, x1, y1, x2, y2, score, label)      level-0 pixels, xyxy
    annotations(id, slide_id, x1, y1, x2, y2, label, source, created_at, created_by)
        source: "hand" (added by a reviewer, with an "add" decision), "ground truth", or a file name.
    hpf_regions(id, slide_id, x, y, w, h, created_at, created_by)        user-drawn HPF rectangles
    decisions(id, slide_id, object_kind, object_id, verdict, label, target_id, reviewer, decided_at)
        append-only; verdict in accept|reject|relabel|add|delete|undo|redo; target_id names the row an
        undo or redo refers to.
    object_state(object_kind, object_id, slide_id, status, label, decision_id)   derived cache
    detection_index, annotation_index: R*Tree (id, x1, x2, y1, y2) for region queries (2-D: a slide
        dimension, constant within a slide, ruins the tree's splits; the join filters the slide).

Objects without a row in ``object_state`` have their default status: a detection is pending with its
model label; an imported annotation is ground truth.
"""

from __future__ import annotations

import getpass
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from midog_viewer.classes import MITOTIC_FIGURE, canonical_class
from midog_viewer.errors import ReviewStoreError
from midog_viewer.review.status import Status, Verdict, colour_for

SCHEMA_VERSION = 1

_SCHEMA_V1 = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE slides (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    name TEXT NOT NULL,
    size_bytes INTEGER,
    mtime REAL,
    mpp REAL,
    width INTEGER,
    height INTEGER,
    added_at TEXT NOT NULL,
    added_by TEXT NOT NULL
);
CREATE INDEX slides_by_name ON slides(name);
CREATE INDEX slides_by_path ON slides(path);
CREATE TABLE detection_runs (
    id INTEGER PRIMARY KEY,
    slide_id INTEGER NOT NULL REFERENCES slides(id),
    model TEXT NOT NULL,
    params TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL
);
CREATE TABLE detections (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES detection_runs(id),
    slide_id INTEGER NOT NULL REFERENCES slides(id),
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    score REAL NOT NULL,
    label TEXT NOT NULL
);
CREATE INDEX detections_by_slide ON detections(slide_id, run_id);
CREATE TABLE annotations (
    id INTEGER PRIMARY KEY,
    slide_id INTEGER NOT NULL REFERENCES slides(id),
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    label TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL
);
CREATE INDEX annotations_by_slide ON annotations(slide_id);
CREATE TABLE hpf_regions (
    id INTEGER PRIMARY KEY,
    slide_id INTEGER NOT NULL REFERENCES slides(id),
    x REAL NOT NULL, y REAL NOT NULL, w REAL NOT NULL, h REAL NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL
);
CREATE TABLE decisions (
    id INTEGER PRIMARY KEY,
    slide_id INTEGER NOT NULL REFERENCES slides(id),
    object_kind TEXT NOT NULL CHECK (object_kind IN ('detection', 'annotation')),
    object_id INTEGER NOT NULL,
    verdict TEXT NOT NULL
        CHECK (verdict IN ('accept', 'reject', 'relabel', 'add', 'delete', 'undo', 'redo')),
    label TEXT,
    target_id INTEGER REFERENCES decisions(id),
    reviewer TEXT NOT NULL,
    decided_at TEXT NOT NULL
);
CREATE INDEX decisions_by_slide ON decisions(slide_id, id);
CREATE TRIGGER decisions_no_update BEFORE UPDATE ON decisions
    BEGIN SELECT RAISE(ABORT, 'the decision log is append-only'); END;
CREATE TRIGGER decisions_no_delete BEFORE DELETE ON decisions
    BEGIN SELECT RAISE(ABORT, 'the decision log is append-only'); END;
CREATE TABLE object_state (
    object_kind TEXT NOT NULL,
    object_id INTEGER NOT NULL,
    slide_id INTEGER NOT NULL,
    status TEXT NOT NULL,
    label TEXT NOT NULL,
    decision_id INTEGER NOT NULL,
    PRIMARY KEY (object_kind, object_id)
) WITHOUT ROWID;
CREATE VIRTUAL TABLE detection_index USING rtree(id, x1, x2, y1, y2);
CREATE VIRTUAL TABLE annotation_index USING rtree(id, x1, x2, y1, y2);
"""

#: version → SQL that upgrades a file from ``version - 1``; version 1 is the fresh schema.
_MIGRATIONS: dict[int, str] = {1: _SCHEMA_V1}

DETECTION = "detection"
ANNOTATION = "annotation"
HAND = "hand"
GROUND_TRUTH_SOURCE = "ground truth"

_DURABILITY = {"normal": "NORMAL", "full": "FULL"}
#: Statuses of the labels a review produced (what exports and training take as labelled).
REVIEWED_STATUSES = (Status.ACCEPTED.value, Status.GROUND_TRUTH.value, Status.RELABELLED.value)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _default_reviewer() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return "unknown"


@dataclass(frozen=True)
class Slide:
    """A slide row: ``path`` is absolute, or a bare file name when registered by an import."""

    id: int
    path: str
    name: str
    mpp: float | None
    width: int | None
    height: int | None


@dataclass(frozen=True)
class HPFRegion:
    """A user-drawn high-power field, level-0 pixels."""

    id: int
    slide_id: int
    x: float
    y: float
    w: float
    h: float


@dataclass(frozen=True)
class Decision:
    """One row of the decision log."""

    id: int
    slide_id: int
    object_kind: str
    object_id: int
    verdict: Verdict
    label: str | None
    target_id: int | None
    reviewer: str
    decided_at: str


_COLUMNS = ("id", "kind", "x1", "y1", "x2", "y2", "score", "label", "status", "source", "run_id")


@dataclass(frozen=True)
class ObjectTable:
    """Columnar objects of one slide: every field is a numpy array of the same length.

    ``id`` int64 (unique within ``kind``), ``kind`` "detection" | "annotation", ``x1 y1 x2 y2`` float64
    level-0 pixels, ``score`` float64 (NaN for annotations), ``label`` str, ``status`` :class:`Status`
    values (str), ``source`` str (annotations; "" for detections), ``run_id`` int64 (-1 for
    annotations). ``table["x1"]`` works as well as ``table.x1``.
    """

    id: np.ndarray
    kind: np.ndarray
    x1: np.ndarray
    y1: np.ndarray
    x2: np.ndarray
    y2: np.ndarray
    score: np.ndarray
    label: np.ndarray
    status: np.ndarray
    source: np.ndarray
    run_id: np.ndarray

    def __len__(self) -> int:
        return len(self.id)

    def __getitem__(self, column: str) -> np.ndarray:
        if column not in _COLUMNS:
            raise KeyError(column)
        return getattr(self, column)

    def keys(self) -> tuple[str, ...]:
        return _COLUMNS

    @property
    def boxes(self) -> np.ndarray:
        """(N, 4) float64 xyxy boxes."""
        return np.stack([self.x1, self.y1, self.x2, self.y2], axis=1).reshape(-1, 4)

    @property
    def centres(self) -> np.ndarray:
        """(N, 2) float64 box centres (x, y)."""
        return np.stack([(self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2], axis=1).reshape(-1, 2)

    def colours(self) -> list[str]:
        """The colour name of each row, by :func:`~midog_viewer.review.status.colour_for`."""
        return [colour_for(s) for s in self.status]

    def select(self, mask: np.ndarray) -> ObjectTable:
        """The rows where ``mask`` (bool array or index array) selects."""
        return ObjectTable(**{c: getattr(self, c)[mask] for c in _COLUMNS})

    @classmethod
    def from_rows(cls, rows: Sequence[tuple]) -> ObjectTable:
        """Build from rows ordered as the fields (id, kind, x1, y1, x2, y2, score, label, status, source, run_id)."""
        if not rows:
            return cls.empty()
        cols = list(zip(*rows))
        return cls(
            id=np.asarray(cols[0], dtype=np.int64),
            kind=np.asarray(cols[1], dtype=object),
            x1=np.asarray(cols[2], dtype=np.float64),
            y1=np.asarray(cols[3], dtype=np.float64),
            x2=np.asarray(cols[4], dtype=np.float64),
            y2=np.asarray(cols[5], dtype=np.float64),
            score=np.asarray([np.nan if s is None else s for s in cols[6]], dtype=np.float64),
            label=np.asarray(cols[7], dtype=object),
            status=np.asarray(cols[8], dtype=object),
            source=np.asarray(cols[9], dtype=object),
            run_id=np.asarray(cols[10], dtype=np.int64),
        )

    @classmethod
    def empty(cls) -> ObjectTable:
        floats = np.zeros(0, dtype=np.float64)
        objects = np.zeros(0, dtype=object)
        ints = np.zeros(0, dtype=np.int64)
        return cls(ints, objects, floats, floats, floats, floats, floats, objects, objects, objects, ints)

    @staticmethod
    def concatenate(tables: Iterable[ObjectTable]) -> ObjectTable:
        tables = list(tables)
        if not tables:
            return ObjectTable.empty()
        return ObjectTable(**{c: np.concatenate([getattr(t, c) for t in tables]) for c in _COLUMNS})


def _file_identity(path: Path) -> tuple[int | None, float | None]:
    try:
        st = path.stat()
    except OSError:
        return None, None
    return int(st.st_size), float(st.st_mtime)


def _check_boxes(boxes: Any, what: str) -> np.ndarray:
    array = np.asarray(boxes, dtype=np.float64)
    if array.ndim == 1 and array.size == 4:
        array = array.reshape(1, 4)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ReviewStoreError(f"{what} must be an (N, 4) array of x1, y1, x2, y2, not shape {array.shape}.")
    if not np.all(np.isfinite(array)):
        raise ReviewStoreError(f"{what} contain NaN or infinite coordinates.")
    if np.any(array[:, 2] < array[:, 0]) or np.any(array[:, 3] < array[:, 1]):
        raise ReviewStoreError(f"{what} must have x2 >= x1 and y2 >= y1 (xyxy order).")
    return array


class ReviewStore:
    """The review database of one project (see the module docstring for the schema).

    Use as a context manager or call :meth:`close`. One instance may be shared by threads (calls are
    serialised by a lock); other processes may open the same file at the same time.
    """

    def __init__(self, db_path: str | os.PathLike, reviewer: str | None = None, durability: str = "normal"):
        if durability not in _DURABILITY:
            raise ReviewStoreError(f"durability must be 'normal' or 'full', not {durability!r}.")
        self.path = Path(db_path)
        self.reviewer = reviewer or _default_reviewer()
        self._lock = threading.RLock()
        self._depth = 0
        if self.path.is_dir():
            raise ReviewStoreError(f"{self.path} is a folder, not a review database file.")
        try:
            self._db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise ReviewStoreError(f"cannot open review database {self.path}: {exc}.") from exc
        try:
            self._configure(durability)
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise ReviewStoreError(f"{self.path} is not a usable review database ({exc}).") from exc
        except ReviewStoreError:
            self._db.close()
            raise

    # -- connection and schema -------------------------------------------------------------------

    def _configure(self, durability: str) -> None:
        self._db.execute("PRAGMA busy_timeout = 10000")
        mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise ReviewStoreError(f"{self.path} cannot use a write-ahead log (journal mode {mode}).")
        self._db.execute(f"PRAGMA synchronous = {_DURABILITY[durability]}")
        self._db.execute("PRAGMA foreign_keys = ON")

    def _migrate(self) -> None:
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "schema_version" not in tables:
            if tables:
                raise ReviewStoreError(f"{self.path} is an SQLite database but not a midog-viewer review store.")
            version = 0
        else:
            row = self._db.execute("SELECT version FROM schema_version").fetchone()
            version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise ReviewStoreError(
                f"{self.path} has schema version {version}, newer than this midog-viewer reads ({SCHEMA_VERSION})."
            )
        if version == SCHEMA_VERSION:
            return
        with self._transaction():
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _split_sql(_MIGRATIONS[step]):
                    self._db.execute(statement)
            self._db.execute("DELETE FROM schema_version")
            self._db.execute("INSERT INTO schema_version(version) VALUES (?)", (SCHEMA_VERSION,))

    class _Transaction:
        """BEGIN IMMEDIATE … COMMIT under the store's lock; nested uses join the outer transaction."""

        def __init__(self, store: ReviewStore):
            self.store = store

        def __enter__(self) -> sqlite3.Connection:
            store = self.store
            store._lock.acquire()
            if store._depth == 0:
                try:
                    store._db.execute("BEGIN IMMEDIATE")
                except BaseException:
                    store._lock.release()
                    raise
            store._depth += 1
            return store._db

        def __exit__(self, exc_type, exc, tb) -> None:
            store = self.store
            store._depth -= 1
            try:
                if store._depth == 0:
                    store._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
            finally:
                store._lock.release()

    def _transaction(self) -> ReviewStore._Transaction:
        """A write transaction, rolled back on any exception; nested ones join the outermost."""
        return ReviewStore._Transaction(self)

    def transaction(self) -> ReviewStore._Transaction:
        """Group several writes (e.g. a whole import) into one atomic transaction."""
        return self._transaction()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def close(self) -> None:
        """Close the connection; the file stays consistent whether or not this is called."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> ReviewStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` result ("ok" when the file is sound)."""
        return str(self._query("PRAGMA integrity_check")[0][0])

    # -- slides ---------------------------------------------------------------------------------

    def add_slide(
        self, path: str | os.PathLike, mpp: float | None = None, width: int | None = None, height: int | None = None,
        *, name_only: bool = False,
    ) -> int:
        """Register a slide and return its id; the same file (path, size, mtime) gives the same id.

        A slide an import registered by file name only (``name_only``: no file is looked for) is bound to
        the first real file of that name.
        """
        with self._transaction() as db:
            return self._add_slide(db, path, mpp, width, height, name_only)

    def _add_slide(
        self, db: sqlite3.Connection, path: str | os.PathLike, mpp: float | None, width: int | None, height: int | None,
        name_only: bool = False,
    ) -> int:
        if mpp is not None and not (np.isfinite(mpp) and mpp > 0):
            raise ReviewStoreError(f"pixel size must be a positive number of µm, not {mpp!r}.")
        raw = Path(path)
        on_disk = not name_only and raw.exists()
        stored_path = str(raw.resolve()) if on_disk else str(path)
        name = raw.name
        size, mtime = _file_identity(raw) if on_disk else (None, None)
        row = db.execute(
            "SELECT id FROM slides WHERE path = ? AND size_bytes IS ? AND mtime IS ?", (stored_path, size, mtime)
        ).fetchone()
        if row is None and on_disk:
            row = db.execute(
                "SELECT id FROM slides WHERE name = ? AND size_bytes IS NULL ORDER BY id LIMIT 1", (name,)
            ).fetchone()
            if row is not None:
                db.execute(
                    "UPDATE slides SET path = ?, size_bytes = ?, mtime = ? WHERE id = ?", (stored_path, size, mtime, row[0])
                )
        if row is not None:
            slide_id = int(row[0])
            db.execute(
                "UPDATE slides SET mpp = COALESCE(?, mpp), width = COALESCE(?, width), height = COALESCE(?, height)"
                " WHERE id = ?",
                (mpp, width, height, slide_id),
            )
            return slide_id
        cursor = db.execute(
            "INSERT INTO slides(path, name, size_bytes, mtime, mpp, width, height, added_at, added_by)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (stored_path, name, size, mtime, mpp, width, height, _now(), self.reviewer),
        )
        return int(cursor.lastrowid)

    def slides(self) -> list[Slide]:
        """Every registered slide, in id order."""
        rows = self._query("SELECT id, path, name, mpp, width, height FROM slides ORDER BY id")
        return [Slide(*row) for row in rows]

    def slide(self, slide_id: int) -> Slide:
        rows = self._query("SELECT id, path, name, mpp, width, height FROM slides WHERE id = ?", (slide_id,))
        if not rows:
            raise ReviewStoreError(f"there is no slide with id {slide_id} in {self.path}.")
        return Slide(*rows[0])

    def find_slide(self, name: str) -> Slide | None:
        """The first slide whose file name (or path) is ``name``, or None."""
        rows = self._query(
            "SELECT id, path, name, mpp, width, height FROM slides WHERE name = ? OR path = ? ORDER BY id LIMIT 1",
            (Path(name).name, name),
        )
        return Slide(*rows[0]) if rows else None

    def set_slide_mpp(self, slide_id: int, mpp: float) -> None:
        """Record a slide's pixel size (µm per pixel) when the file did not say."""
        if not (np.isfinite(mpp) and mpp > 0):
            raise ReviewStoreError(f"pixel size must be a positive number of µm, not {mpp!r}.")
        self.slide(slide_id)
        with self._transaction() as db:
            db.execute("UPDATE slides SET mpp = ? WHERE id = ?", (float(mpp), slide_id))

    # -- detections -----------------------------------------------------------------------------

    def add_detection_run(self, slide_id: int, model: str, params: dict) -> int:
        """Record one run of a detector on a slide; ``params`` must be JSON-serialisable."""
        self.slide(slide_id)
        try:
            params_json = json.dumps(params, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise ReviewStoreError(f"detection run parameters are not JSON-serialisable: {exc}.") from exc
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO detection_runs(slide_id, model, params, created_at, created_by) VALUES (?, ?, ?, ?, ?)",
                (slide_id, str(model), params_json, _now(), self.reviewer),
            )
            return int(cursor.lastrowid)

    def detection_runs(self, slide_id: int) -> list[dict]:
        """The runs on a slide, oldest first: id, model, params (dict), created_at, created_by."""
        rows = self._query(
            "SELECT id, model, params, created_at, created_by FROM detection_runs WHERE slide_id = ? ORDER BY id",
            (slide_id,),
        )
        return [
            {"id": r[0], "model": r[1], "params": json.loads(r[2]), "created_at": r[3], "created_by": r[4]}
            for r in rows
        ]

    def add_detections(self, run_id: int, boxes: np.ndarray, scores: np.ndarray, labels: Sequence[str]) -> np.ndarray:
        """Store a run's detections (level-0 xyxy boxes) in one transaction; return their ids (int64)."""
        array = _check_boxes(boxes, "detection boxes")
        score_array = np.asarray(scores, dtype=np.float64).reshape(-1)
        label_list = [canonical_class(label) for label in labels]
        if not (len(array) == len(score_array) == len(label_list)):
            raise ReviewStoreError(
                f"detections need as many scores and labels as boxes "
                f"({len(array)} boxes, {len(score_array)} scores, {len(label_list)} labels)."
            )
        if not np.all(np.isfinite(score_array)):
            raise ReviewStoreError("detection scores contain NaN or infinite values.")
        rows = self._query("SELECT slide_id FROM detection_runs WHERE id = ?", (run_id,))
        if not rows:
            raise ReviewStoreError(f"there is no detection run with id {run_id}.")
        slide_id = int(rows[0][0])
        with self._transaction() as db:
            first = int(db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM detections").fetchone()[0])
            ids = np.arange(first, first + len(array), dtype=np.int64)
            id_list = ids.tolist()
            coords = array.tolist()
            db.executemany(
                "INSERT INTO detections(id, run_id, slide_id, x1, y1, x2, y2, score, label)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (i, run_id, slide_id, b[0], b[1], b[2], b[3], s, lab)
                    for i, b, s, lab in zip(id_list, coords, score_array.tolist(), label_list)
                ),
            )
            db.executemany(
                "INSERT INTO detection_index VALUES (?, ?, ?, ?, ?)",
                ((i, b[0], b[2], b[1], b[3]) for i, b in zip(id_list, coords)),
            )
        return ids

    # -- annotations ----------------------------------------------------------------------------

    def add_annotation(self, slide_id: int, box: Sequence[float], label: str, source: str = HAND) -> int:
        """Add one annotation; by hand ("hand") it is logged as an "add" decision, else it is ground truth."""
        self.slide(slide_id)
        with self._transaction() as db:
            ids = self._insert_annotations(db, slide_id, _check_boxes(box, "annotation box"), [label], source)
            annotation_id = int(ids[0])
            if source == HAND:
                self._log(db, slide_id, ANNOTATION, annotation_id, Verdict.ADD, canonical_class(label), None, None)
            return annotation_id

    def add_annotations(self, slide_id: int, boxes: np.ndarray, labels: Sequence[str], source: str) -> np.ndarray:
        """Add many imported (not hand-drawn) annotations in one transaction; return their ids."""
        if source == HAND:
            raise ReviewStoreError("annotations added by hand are added one at a time with add_annotation.")
        self.slide(slide_id)
        with self._transaction() as db:
            return self._insert_annotations(db, slide_id, _check_boxes(boxes, "annotation boxes"), labels, source)

    def _insert_annotations(
        self, db: sqlite3.Connection, slide_id: int, boxes: np.ndarray, labels: Sequence[str], source: str
    ) -> np.ndarray:
        if len(boxes) != len(labels):
            raise ReviewStoreError(f"{len(boxes)} annotation boxes but {len(labels)} labels.")
        first = int(db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM annotations").fetchone()[0])
        ids = np.arange(first, first + len(boxes), dtype=np.int64)
        id_list = ids.tolist()
        coords = boxes.tolist()
        now = _now()
        db.executemany(
            "INSERT INTO annotations(id, slide_id, x1, y1, x2, y2, label, source, created_at, created_by)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (i, slide_id, b[0], b[1], b[2], b[3], canonical_class(lab), str(source), now, self.reviewer)
                for i, b, lab in zip(id_list, coords, labels)
            ),
        )
        db.executemany(
            "INSERT INTO annotation_index VALUES (?, ?, ?, ?, ?)",
            ((i, b[0], b[2], b[1], b[3]) for i, b in zip(id_list, coords)),
        )
        return ids

    def delete_annotation(self, annotation_id: int, reviewer: str | None = None) -> int:
        """Delete an annotation (a "delete" decision, undoable); return the decision id."""
        rows = self._query("SELECT slide_id, label FROM annotations WHERE id = ?", (annotation_id,))
        if not rows:
            raise ReviewStoreError(f"there is no annotation with id {annotation_id}.")
        slide_id, label = rows[0]
        with self._transaction() as db:
            state = db.execute(
                "SELECT status, label FROM object_state WHERE object_kind = ? AND object_id = ?",
                (ANNOTATION, annotation_id),
            ).fetchone()
            if state is not None and state[0] == Status.DELETED.value:
                raise ReviewStoreError(f"annotation {annotation_id} is already deleted.")
            current_label = state[1] if state is not None else label
            return self._log(db, slide_id, ANNOTATION, annotation_id, Verdict.DELETE, current_label, None, reviewer)

    # -- decisions ------------------------------------------------------------------------------

    def decide(
        self, detection_id: int, verdict: Verdict | str, reviewer: str | None = None, label: str | None = None
    ) -> int:
        """Log a reviewer's verdict on a detection, committed before returning; return the decision id.

        ``Verdict.RELABEL`` needs ``label`` (e.g. "hard negative"); accept and reject keep the label.
        """
        try:
            verdict = Verdict(verdict)
        except ValueError as exc:
            raise ReviewStoreError(f"unknown verdict {verdict!r}: use accept, reject or relabel.") from exc
        if verdict not in (Verdict.ACCEPT, Verdict.REJECT, Verdict.RELABEL):
            raise ReviewStoreError(f"a detection can be accepted, rejected or relabelled, not {verdict.value!r}.")
        if verdict is Verdict.RELABEL and not label:
            raise ReviewStoreError("relabelling a detection needs the new label.")
        with self._transaction() as db:
            row = db.execute(
                "SELECT d.slide_id, COALESCE(s.label, d.label) FROM detections d LEFT JOIN object_state s"
                " ON s.object_kind = 'detection' AND s.object_id = d.id WHERE d.id = ?",
                (detection_id,),
            ).fetchone()
            if row is None:
                raise ReviewStoreError(f"there is no detection with id {detection_id}.")
            slide_id, current_label = row
            new_label = canonical_class(label) if verdict is Verdict.RELABEL else current_label
            return self._log(db, slide_id, DETECTION, detection_id, verdict, new_label, None, reviewer)

    def _log(
        self,
        db: sqlite3.Connection,
        slide_id: int,
        kind: str,
        object_id: int,
        verdict: Verdict,
        label: str | None,
        target_id: int | None,
        reviewer: str | None,
    ) -> int:
        """Append one log row and bring the object's cached state up to date (inside a transaction)."""
        cursor = db.execute(
            "INSERT INTO decisions(slide_id, object_kind, object_id, verdict, label, target_id, reviewer, decided_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (slide_id, kind, object_id, verdict.value, label, target_id, reviewer or self.reviewer, _now()),
        )
        decision_id = int(cursor.lastrowid)
        if verdict not in (Verdict.UNDO, Verdict.REDO):
            self._write_state(db, kind, object_id, slide_id, _status_after(kind, verdict, label), label, decision_id)
        return decision_id

    @staticmethod
    def _write_state(
        db: sqlite3.Connection, kind: str, object_id: int, slide_id: int, status: Status, label: str, decision_id: int
    ) -> None:
        db.execute(
            "INSERT OR REPLACE INTO object_state(object_kind, object_id, slide_id, status, label, decision_id)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (kind, object_id, slide_id, status.value, label, decision_id),
        )

    def undo(self, slide_id: int, reviewer: str | None = None) -> int | None:
        """Undo the latest effective decision on a slide (a new "undo" row); return the object id or None."""
        return self._undo_redo(slide_id, Verdict.UNDO, reviewer)

    def redo(self, slide_id: int, reviewer: str | None = None) -> int | None:
        """Redo the latest undone decision if nothing was decided since; return the object id or None."""
        return self._undo_redo(slide_id, Verdict.REDO, reviewer)

    def _undo_redo(self, slide_id: int, verdict: Verdict, reviewer: str | None) -> int | None:
        with self._transaction() as db:
            log = _replay(db.execute(_LOG_SQL, (slide_id,)).fetchall())
            stack = log.done if verdict is Verdict.UNDO else log.undone
            if not stack:
                return None
            target = stack[-1]
            row = log.rows[target]
            self._log(db, slide_id, row.object_kind, row.object_id, verdict, row.label, target, reviewer)
            if verdict is Verdict.UNDO:
                log.done.pop()
            else:
                log.done.append(log.undone.pop())
            self._refresh_state(db, log, slide_id, row.object_kind, row.object_id)
            return row.object_id

    def _refresh_state(self, db: sqlite3.Connection, log: _Replay, slide_id: int, kind: str, object_id: int) -> None:
        """Set one object's cached state from the effective decisions of a replayed log."""
        last = next(
            (log.rows[d] for d in reversed(log.done) if log.rows[d].object_kind == kind and log.rows[d].object_id == object_id),
            None,
        )
        if last is not None:
            self._write_state(
                db, kind, object_id, slide_id, _status_after(kind, last.verdict, last.label), last.label, last.id
            )
            return
        db.execute("DELETE FROM object_state WHERE object_kind = ? AND object_id = ?", (kind, object_id))
        if kind == ANNOTATION:
            source, label = db.execute("SELECT source, label FROM annotations WHERE id = ?", (object_id,)).fetchone()
            if source == HAND:  # its "add" was undone: the annotation no longer exists
                self._write_state(db, kind, object_id, slide_id, Status.DELETED, label, 0)

    def decisions(self, slide_id: int | None = None) -> list[Decision]:
        """The decision log (of one slide, or all), oldest first."""
        sql = "SELECT id, slide_id, object_kind, object_id, verdict, label, target_id, reviewer, decided_at FROM decisions"
        rows = self._query(sql + (" WHERE slide_id = ? ORDER BY id" if slide_id is not None else " ORDER BY id"),
                           (slide_id,) if slide_id is not None else ())
        return [Decision(r[0], r[1], r[2], r[3], Verdict(r[4]), r[5], r[6], r[7], r[8]) for r in rows]

    def rebuild_state(self) -> None:
        """Recompute every object's cached state from the decision log alone."""
        with self._transaction() as db:
            db.execute("DELETE FROM object_state")
            for (slide_id,) in db.execute("SELECT DISTINCT slide_id FROM decisions").fetchall():
                log = _replay(db.execute(_LOG_SQL, (slide_id,)).fetchall())
                touched = {(log.rows[d].object_kind, log.rows[d].object_id) for d in log.rows}
                for kind, object_id in sorted(touched):
                    self._refresh_state(db, log, slide_id, kind, object_id)

    # -- HPF regions ----------------------------------------------------------------------------

    def add_hpf(self, slide_id: int, region: Sequence[float]) -> int:
        """Store a user-drawn high-power field (x, y, w, h in level-0 pixels); return its id."""
        x, y, w, h = _check_region(region)
        self.slide(slide_id)
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO hpf_regions(slide_id, x, y, w, h, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (slide_id, x, y, w, h, _now(), self.reviewer),
            )
            return int(cursor.lastrowid)

    def delete_hpf(self, hpf_id: int) -> None:
        with self._transaction() as db:
            if db.execute("DELETE FROM hpf_regions WHERE id = ?", (hpf_id,)).rowcount == 0:
                raise ReviewStoreError(f"there is no HPF region with id {hpf_id}.")

    def hpf_regions(self, slide_id: int) -> list[HPFRegion]:
        rows = self._query("SELECT id, slide_id, x, y, w, h FROM hpf_regions WHERE slide_id = ? ORDER BY id", (slide_id,))
        return [HPFRegion(*row) for row in rows]

    # -- queries --------------------------------------------------------------------------------

    def objects(
        self,
        slide_id: int,
        region: Sequence[float] | None = None,
        *,
        run_id: int | None = None,
        include_deleted: bool = False,
    ) -> ObjectTable:
        """Detections and annotations of a slide (those touching ``region`` = (x, y, w, h) if given).

        Status comes from the decision log (review colouring); deleted annotations are left out unless
        ``include_deleted``. ``run_id`` keeps only that run's detections.
        """
        detection_where = ["d.slide_id = ?"]
        annotation_where = ["a.slide_id = ?"]
        detection_params: list[Any] = [slide_id]
        annotation_params: list[Any] = [slide_id]
        detection_from, annotation_from = "detections d", "annotations a"
        if region is not None:
            x, y, w, h = _check_region(region)
            # drive the query from the R*Tree (CROSS JOIN fixes the order), then test the exact boxes
            detection_from = "detection_index r CROSS JOIN detections d ON d.id = r.id"
            annotation_from = "annotation_index r CROSS JOIN annotations a ON a.id = r.id"
            spatial = "r.x2 >= ? AND r.x1 <= ? AND r.y2 >= ? AND r.y1 <= ?"
            exact = "{a}.x2 >= ? AND {a}.x1 <= ? AND {a}.y2 >= ? AND {a}.y1 <= ?"
            detection_where += [spatial, exact.format(a="d")]
            annotation_where += [spatial, exact.format(a="a")]
            window = [x, x + w, y, y + h, x, x + w, y, y + h]
            detection_params += window
            annotation_params += window
        if run_id is not None:
            detection_where.append("d.run_id = ?")
            detection_params.append(run_id)
        if not include_deleted:
            annotation_where.append("COALESCE(s.status, '') != 'deleted'")
        detection_sql = (
            "SELECT d.id, 'detection', d.x1, d.y1, d.x2, d.y2, d.score, COALESCE(s.label, d.label),"
            f" COALESCE(s.status, 'pending'), '', d.run_id FROM {detection_from} LEFT JOIN object_state s"
            " ON s.object_kind = 'detection' AND s.object_id = d.id WHERE " + " AND ".join(detection_where)
            + " ORDER BY d.id"
        )
        annotation_sql = (
            "SELECT a.id, 'annotation', a.x1, a.y1, a.x2, a.y2, NULL, COALESCE(s.label, a.label),"
            f" COALESCE(s.status, 'ground truth'), a.source, -1 FROM {annotation_from} LEFT JOIN object_state s"
            " ON s.object_kind = 'annotation' AND s.object_id = a.id WHERE " + " AND ".join(annotation_where)
            + " ORDER BY a.id"
        )
        with self._lock:
            rows = self._db.execute(detection_sql, detection_params).fetchall()
            rows += self._db.execute(annotation_sql, annotation_params).fetchall()
        return ObjectTable.from_rows(rows)

    def annotation_sources(self) -> dict[str, int]:
        """How many annotations each source (file name, "hand", "ground truth") contributed."""
        return dict(self._query("SELECT source, COUNT(*) FROM annotations GROUP BY source ORDER BY source"))

    def reviewed_objects(self, slide_id: int) -> ObjectTable:
        """The labels a review produced: ground truth, hand annotations, accepted and relabelled detections."""
        table = self.objects(slide_id)
        return table.select(np.isin(table.status, REVIEWED_STATUSES))


def _check_region(region: Sequence[float]) -> tuple[float, float, float, float]:
    try:
        x, y, w, h = (float(v) for v in region)
    except (TypeError, ValueError) as exc:
        raise ReviewStoreError(f"a region is (x, y, w, h) in level-0 pixels, not {region!r}.") from exc
    if not all(np.isfinite(v) for v in (x, y, w, h)) or w < 0 or h < 0:
        raise ReviewStoreError(f"a region needs finite x, y and non-negative w, h, not {region!r}.")
    return x, y, w, h


def _status_after(kind: str, verdict: Verdict, label: str | None) -> Status:
    """The status an object has when ``verdict`` is its latest effective decision."""
    if verdict is Verdict.ACCEPT:
        return Status.ACCEPTED
    if verdict is Verdict.REJECT:
        return Status.REJECTED
    if verdict is Verdict.RELABEL:
        return Status.ACCEPTED if label == MITOTIC_FIGURE else Status.RELABELLED
    if verdict is Verdict.ADD:
        return Status.ACCEPTED
    if verdict is Verdict.DELETE:
        return Status.DELETED
    raise ValueError(f"{verdict} does not set a status")  # undo/redo never reach here


_LOG_SQL = "SELECT id, object_kind, object_id, verdict, label, target_id FROM decisions WHERE slide_id = ? ORDER BY id"


@dataclass(frozen=True)
class _LogRow:
    id: int
    object_kind: str
    object_id: int
    verdict: Verdict
    label: str | None
    target_id: int | None


@dataclass
class _Replay:
    rows: dict[int, _LogRow]
    done: list[int]
    undone: list[int]


def _replay(rows: Iterable[tuple]) -> _Replay:
    """Replay a slide's log: ``done`` holds the effective decisions in order, ``undone`` the redo stack."""
    replay = _Replay(rows={}, done=[], undone=[])
    for raw in rows:
        row = _LogRow(raw[0], raw[1], raw[2], Verdict(raw[3]), raw[4], raw[5])
        if row.verdict is Verdict.UNDO:
            if replay.done and replay.done[-1] == row.target_id:
                replay.undone.append(replay.done.pop())
        elif row.verdict is Verdict.REDO:
            if replay.undone and replay.undone[-1] == row.target_id:
                replay.done.append(replay.undone.pop())
        else:
            replay.rows[row.id] = row
            replay.done.append(row.id)
            replay.undone.clear()
    return replay


def _split_sql(script: str) -> Iterator[str]:
    """Statements of a schema script (triggers keep their inner semicolons)."""
    statement: list[str] = []
    for line in script.strip().splitlines():
        statement.append(line)
        joined = "\n".join(statement).strip()
        if joined.endswith(";") and (not joined.upper().startswith("CREATE TRIGGER") or joined.upper().endswith("END;")):
            yield joined
            statement = []
