"""The review file's schema, its migrations, and the read-only check that a file is a review store.

Schema (version 3; ``schema_version`` holds the version, :data:`MIGRATIONS` upgrades older files)::

    slides(id, path, name, size_bytes, mtime, mpp, width, height, added_at, added_by, fingerprint)
        path is absolute, or a bare file name for a slide registered by an import; name is the file
        name imports match on; size_bytes + mtime identify the file version (NULL when not on disk);
        fingerprint (version 2) identifies its content (:mod:`midog_viewer.io.fingerprint`), so a moved,
        renamed or copied slide finds its review (NULL until a file is opened; older rows get theirs
        when their file is next opened).
    detection_runs(id, slide_id, model, params JSON, created_at, created_by)
    detection_runs.atypical_threshold (version 3): the atypical classifier's threshold (NULL: none ran).
    detections(id, run_id, slide_id, x1, y1, x2, y2, score, label, p_atypical)      level-0 pixels, xyxy
        p_atypical (version 3): the atypical classifier's probability (NULL: not a mitotic figure, or none ran).
    annotations(id, slide_id, x1, y1, x2, y2, label, source, created_at, created_by, atypical)
        source: "hand" (added by a reviewer, with an "add" decision), "ground truth", or a file name;
        atypical (version 3): the subtype an imported file gave (1/0, NULL: it said nothing).
    hpf_regions(id, slide_id, x, y, w, h, created_at, created_by)        user-drawn HPF rectangles
    decisions(id, slide_id, object_kind, object_id, verdict, label, target_id, reviewer, decided_at)
        append-only; verdict in accept|reject|relabel|add|delete|undo|redo|subtype (version 3: a subtype
        row sets only the figure's subtype, label "atypical" or "normal"); target_id names the row an
        undo or redo refers to.
    subtype_state(object_kind, object_id, slide_id, atypical, decision_id)   derived cache of subtype rows
    object_state(object_kind, object_id, slide_id, status, label, decision_id)   derived cache
    detection_index, annotation_index: R*Tree (id, x1, x2, y1, y2) for region queries (2-D: a slide
        dimension, constant within a slide, ruins the tree's splits; the join filters the slide).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

from midog_viewer.errors import ReviewStoreError

SCHEMA_VERSION = 3

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

_SLIDE_FINGERPRINTS_V2 = """
ALTER TABLE slides ADD COLUMN fingerprint TEXT;
CREATE INDEX slides_by_fingerprint ON slides(fingerprint);
"""

# SQLite cannot change a CHECK: the log is copied, row for row, into a table that also allows "subtype".
_ATYPICAL_V3 = """
ALTER TABLE detections ADD COLUMN p_atypical REAL;
ALTER TABLE detection_runs ADD COLUMN atypical_threshold REAL;
ALTER TABLE annotations ADD COLUMN atypical INTEGER;
CREATE TABLE decisions_v3 (
    id INTEGER PRIMARY KEY,
    slide_id INTEGER NOT NULL REFERENCES slides(id),
    object_kind TEXT NOT NULL CHECK (object_kind IN ('detection', 'annotation')),
    object_id INTEGER NOT NULL,
    verdict TEXT NOT NULL
        CHECK (verdict IN ('accept', 'reject', 'relabel', 'add', 'delete', 'undo', 'redo', 'subtype')),
    label TEXT,
    target_id INTEGER REFERENCES decisions_v3(id),
    reviewer TEXT NOT NULL,
    decided_at TEXT NOT NULL
);
INSERT INTO decisions_v3 SELECT id, slide_id, object_kind, object_id, verdict, label, target_id, reviewer, decided_at
    FROM decisions ORDER BY id;
DROP TRIGGER decisions_no_update;
DROP TRIGGER decisions_no_delete;
DROP TABLE decisions;
ALTER TABLE decisions_v3 RENAME TO decisions;
CREATE INDEX decisions_by_slide ON decisions(slide_id, id);
CREATE TRIGGER decisions_no_update BEFORE UPDATE ON decisions
    BEGIN SELECT RAISE(ABORT, 'the decision log is append-only'); END;
CREATE TRIGGER decisions_no_delete BEFORE DELETE ON decisions
    BEGIN SELECT RAISE(ABORT, 'the decision log is append-only'); END;
CREATE TABLE subtype_state (
    object_kind TEXT NOT NULL,
    object_id INTEGER NOT NULL,
    slide_id INTEGER NOT NULL,
    atypical INTEGER NOT NULL,
    decision_id INTEGER NOT NULL,
    PRIMARY KEY (object_kind, object_id)
) WITHOUT ROWID;
"""

#: version → SQL that upgrades a file from ``version - 1``; version 1 is the fresh schema.
MIGRATIONS: dict[int, str] = {1: _SCHEMA_V1, 2: _SLIDE_FINGERPRINTS_V2, 3: _ATYPICAL_V3}


def split_sql(script: str) -> Iterator[str]:
    """Statements of a schema script (triggers keep their inner semicolons)."""
    statement: list[str] = []
    for line in script.strip().splitlines():
        statement.append(line)
        joined = "\n".join(statement).strip()
        if joined.endswith(";") and (not joined.upper().startswith("CREATE TRIGGER") or joined.upper().endswith("END;")):
            yield joined
            statement = []


def schema_version(db: sqlite3.Connection, path: Path) -> int:
    """The file's schema version (0: an empty database), refusing foreign and newer files; reads only."""
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "schema_version" not in tables:
        if tables:
            raise ReviewStoreError(f"{path} is an SQLite database but not a midog-viewer review store.")
        return 0
    row = db.execute("SELECT version FROM schema_version").fetchone()
    version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION:
        raise ReviewStoreError(
            f"{path} has schema version {version}, newer than this midog-viewer reads ({SCHEMA_VERSION})."
        )
    return version


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the file up to :data:`SCHEMA_VERSION`; the caller holds a write transaction."""
    version = schema_version(db, path)
    for step in range(version + 1, SCHEMA_VERSION + 1):
        for statement in split_sql(MIGRATIONS[step]):
            db.execute(statement)
    if version != SCHEMA_VERSION:
        db.execute("DELETE FROM schema_version")
        db.execute("INSERT INTO schema_version(version) VALUES (?)", (SCHEMA_VERSION,))
