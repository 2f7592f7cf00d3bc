"""The review store: one SQLite file holding slides, detections, annotations and every decision.

A pathologist's decisions are the product's most valuable data, so the store is built around an
append-only decision log: every accept, reject, relabel, add or delete is one row saying who decided what
and when (UTC), committed in its own transaction before the call returns. Undo and redo append rows that
point at the row they undo or redo, and act on the current reviewer's own decisions only
(:mod:`midog_viewer.review.log`); nothing in the log is ever updated or deleted (triggers refuse it).
The current state of each object is derived from the log; ``object_state`` caches it, written in the
same transaction as the log row, and :meth:`ReviewStore.rebuild_state` recomputes it from the log alone.
The schema is in :mod:`midog_viewer.review.schema`.

Durability: WAL journal with ``synchronous=NORMAL`` by default. A commit then writes the WAL without an
fsync, so a decision survives the process being killed (SIGKILL, a GUI crash) the moment ``decide``
returns, and one decision costs well under a millisecond; only an operating-system crash or power cut
can lose the last commits since the previous checkpoint. ``durability="full"`` (``synchronous=FULL``)
fsyncs every commit for power-cut safety at the disk's fsync cost. A reader in another process sees
every committed decision while the writer goes on (WAL readers never block the writer).
:meth:`ReviewStore.checkpoint` copies the WAL into the main file (on close, and when the GUI is idle),
so a plain copy of the file is current; ``midog-viewer backup`` copies safely at any time.

Objects without a row in ``object_state`` have their default status: a detection is pending with its
model label; an imported annotation is ground truth.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from midog_viewer.classes import canonical_class
from midog_viewer.errors import ReviewStoreError
from midog_viewer.review import atypical as subtype
from midog_viewer.review.decision_log import DecisionLog
from midog_viewer.review.connection import Transaction, checkpoint, open_read_only, open_read_write, translated
from midog_viewer.review.records import (
    default_reviewer,
    now_utc,
    Decision,
    HPFRegion,
    ObjectTable,
    Slide,
    check_boxes,
    check_region,
)
from midog_viewer.review.schema import SCHEMA_VERSION
from midog_viewer.review.slide_identity import SlideLink, link_slide, needs_fingerprint
from midog_viewer.review.status import (
    ANNOTATION,
    DETECTION,
    GROUND_TRUTH_SOURCE,
    HAND,
    REVIEWED_STATUSES,
    Status,
    Verdict,
)

__all__ = [
    "ANNOTATION", "DETECTION", "GROUND_TRUTH_SOURCE", "HAND", "REVIEWED_STATUSES", "SCHEMA_VERSION",
    "Decision", "HPFRegion", "ObjectTable", "ReviewStore", "Slide", "SlideLink",
]

class ReviewStore(DecisionLog, subtype.SubtypeDecisions):
    """The review database of one project (schema: :mod:`midog_viewer.review.schema`).

    Use as a context manager or call :meth:`close`. One instance may be shared by threads (calls are
    serialised by a lock); other processes may open the same file at the same time.
    """

    def __init__(
        self,
        db_path: str | os.PathLike,
        reviewer: str | None = None,
        durability: str = "normal",
        *,
        read_only: bool = False,
    ):
        """Open (or create) the store; ``read_only`` opens an existing one without writing a byte."""
        self.path = Path(db_path)
        self.reviewer = reviewer or default_reviewer()
        self.read_only = read_only
        self._lock = threading.RLock()
        self._depth = 0
        self._last_write = time.monotonic()
        self._unsaved = False
        if self.path.is_dir():
            raise ReviewStoreError(f"{self.path} is a folder, not a review database file.")
        self._db = open_read_only(self.path) if read_only else open_read_write(self.path, durability)

    # -- connection -----------------------------------------------------------------------------

    def _transaction(self) -> Transaction:
        """A write transaction, rolled back on any exception; nested ones join the outermost."""
        return Transaction(self)

    def transaction(self) -> Transaction:
        """Group several writes (e.g. a whole import) into one atomic transaction."""
        return self._transaction()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._lock, translated(self.path):
            return self._db.execute(sql, params).fetchall()

    def checkpoint(self) -> bool:
        """Copy the write-ahead log into the database file (never waits); True when all of it went.

        Then the database file alone holds every committed change: a plain copy of it is current.
        """
        if self.read_only:
            return True
        with self._lock:
            complete = checkpoint(self._db, self.path)
            self._unsaved = not complete  # a reader's snapshot held part back: the idle timer tries again
            return complete

    def checkpoint_if_idle(self, idle_s: float) -> bool:
        """Checkpoint when something was written and nothing for ``idle_s`` seconds; True if it ran."""
        if not self._unsaved or time.monotonic() - self._last_write < idle_s:
            return False
        self.checkpoint()
        return True

    def copy_into(self, target: sqlite3.Connection) -> None:
        """Copy the whole database, one consistent snapshot, into ``target`` (SQLite's online backup).

        Raises ``sqlite3.Error`` as it is: most failures are the target's, which the caller names.
        """
        with self._lock:
            self._db.backup(target)

    def close(self) -> None:
        """Checkpoint (best effort) and close; the file stays consistent whether or not this is called."""
        with self._lock:
            if not self.read_only:
                try:
                    self.checkpoint()
                except ReviewStoreError:
                    pass  # every commit is safe in the write-ahead log already
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
        *, name_only: bool = False, fingerprint: str | None = None,
    ) -> int:
        """Register a slide and return its id: :meth:`link_slide` without the how."""
        return self.link_slide(path, mpp, width, height, name_only=name_only, fingerprint=fingerprint).slide_id

    def link_slide(
        self, path: str | os.PathLike, mpp: float | None = None, width: int | None = None, height: int | None = None,
        *, name_only: bool = False, fingerprint: str | None = None,
    ) -> SlideLink:
        """Find or register the slide of a file, by path, size and mtime, else by content fingerprint.

        Rules: :mod:`midog_viewer.review.slide_identity` (a moved or copied slide finds its review; a
        changed one starts a new review and says so). A slide an import registered by file name only
        (``name_only``: no file is looked for) is bound to the first real file of that name. The
        fingerprint is computed here (a few tiles, outside the write lock) when the file needs one.
        """
        if fingerprint is None:
            with self._lock, translated(self.path):
                wanted = needs_fingerprint(self._db, path, name_only)
            if wanted:
                from midog_viewer.io.fingerprint import file_fingerprint  # reads pixels: only when needed

                fingerprint = file_fingerprint(path)
        with self._transaction() as db:
            return link_slide(db, path, mpp, width, height, name_only=name_only, fingerprint=fingerprint,
                              reviewer=self.reviewer)

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
        """The slide stored under the path ``name``, else the one slide with that file name, else (a file
        that was moved or renamed) the slide with the file's content fingerprint, or None.

        A file name that several slides share (``a/001.png``, ``b/001.png``) is refused: guessing one
        would export or count another slide's objects.
        """
        columns = "SELECT id, path, name, mpp, width, height FROM slides"
        rows = self._query(f"{columns} WHERE path = ? ORDER BY id", (str(name),))
        hint = "the file changed after it was first opened"
        if not rows:
            rows, hint = self._query(f"{columns} WHERE name = ? ORDER BY id", (Path(name).name,)), "give the full path"
        if len(rows) > 1:
            which = ", ".join(f"{row[1]} (id {row[0]})" for row in rows)
            raise ReviewStoreError(f"{len(rows)} slides in {self.path.name} match {name!r}: {which}; {hint}.")
        if not rows and Path(name).exists():  # a moved or renamed file: known by its content
            from midog_viewer.io.fingerprint import file_fingerprint

            found = file_fingerprint(name)
            rows = self._query(f"{columns} WHERE fingerprint = ? ORDER BY id LIMIT 1", (found,)) if found else []
        return Slide(*rows[0]) if rows else None

    def set_slide_mpp(self, slide_id: int, mpp: float) -> None:
        """Record a slide's pixel size (µm per pixel) when the file did not say."""
        if not (np.isfinite(mpp) and mpp > 0):
            raise ReviewStoreError(f"pixel size must be a positive number of µm, not {mpp!r}.")
        self.slide(slide_id)
        with self._transaction() as db:
            db.execute("UPDATE slides SET mpp = ? WHERE id = ?", (float(mpp), slide_id))

    # -- detections -----------------------------------------------------------------------------

    def add_detection_run(self, slide_id: int, model: str, params: dict, atypical_threshold: float | None = None) -> int:
        """Record one run of a detector on a slide (and the atypical classifier's threshold, if one ran)."""
        self.slide(slide_id)
        try:
            params_json = json.dumps(params, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise ReviewStoreError(f"detection run parameters are not JSON-serialisable: {exc}.") from exc
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO detection_runs(slide_id, model, params, created_at, created_by, atypical_threshold)"
                " VALUES (?, ?, ?, ?, ?, ?)", (slide_id, str(model), params_json, now_utc(), self.reviewer,
                                              None if atypical_threshold is None else float(atypical_threshold)),
            )
            return int(cursor.lastrowid)

    def detection_runs(self, slide_id: int) -> list[dict]:
        """The runs on a slide, oldest first: id, model, params (dict), created_at, created_by, atypical_threshold."""
        rows = self._query("SELECT id, model, params, created_at, created_by, atypical_threshold FROM detection_runs"
                           " WHERE slide_id = ? ORDER BY id", (slide_id,))
        return [{"id": r[0], "model": r[1], "params": json.loads(r[2]), "created_at": r[3], "created_by": r[4],
                 "atypical_threshold": r[5]} for r in rows]

    def add_detections(self, run_id: int, boxes: np.ndarray, scores: np.ndarray, labels: Sequence[str],
                       p_atypical: Any = None) -> np.ndarray:
        """Store a run's detections (level-0 xyxy boxes, p_atypical or NaN) in one transaction; return their ids."""
        array = check_boxes(boxes, "detection boxes")
        p_list = subtype.probabilities(p_atypical, len(array))
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
                "INSERT INTO detections(id, run_id, slide_id, x1, y1, x2, y2, score, label, p_atypical)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (i, run_id, slide_id, b[0], b[1], b[2], b[3], s, lab, p)
                    for i, b, s, lab, p in zip(id_list, coords, score_array.tolist(), label_list, p_list)
                ),
            )
            db.executemany(
                "INSERT INTO detection_index VALUES (?, ?, ?, ?, ?)",
                ((i, b[0], b[2], b[1], b[3]) for i, b in zip(id_list, coords)),
            )
        return ids

    # -- annotations ----------------------------------------------------------------------------

    def add_annotation(
        self, slide_id: int, box: Sequence[float], label: str, source: str = HAND, reviewer: str | None = None
    ) -> int:
        """Add one annotation; by hand ("hand") it is logged as an "add" decision, else it is ground truth."""
        self.slide(slide_id)
        with self._transaction() as db:
            ids = self._insert_annotations(db, slide_id, check_boxes(box, "annotation box"), [label], source)
            annotation_id = int(ids[0])
            if source == HAND:
                self._log(db, slide_id, ANNOTATION, annotation_id, Verdict.ADD, canonical_class(label), None, reviewer)
            return annotation_id

    def add_annotations(self, slide_id: int, boxes: np.ndarray, labels: Sequence[str], source: str,
                        atypical: Any = None) -> np.ndarray:
        """Add many imported (not hand-drawn) annotations (with their subtypes, if the file gave) in one go; their ids."""
        if source == HAND:
            raise ReviewStoreError("annotations added by hand are added one at a time with add_annotation.")
        self.slide(slide_id)
        with self._transaction() as db:
            return self._insert_annotations(db, slide_id, check_boxes(boxes, "annotation boxes"), labels, source,
                                            atypical)

    def _insert_annotations(
        self, db: sqlite3.Connection, slide_id: int, boxes: np.ndarray, labels: Sequence[str], source: str,
        atypical: Any = None,
    ) -> np.ndarray:
        if len(boxes) != len(labels):
            raise ReviewStoreError(f"{len(boxes)} annotation boxes but {len(labels)} labels.")
        flags = subtype.subtype_flags(atypical, len(boxes), "annotations")
        first = int(db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM annotations").fetchone()[0])
        ids = np.arange(first, first + len(boxes), dtype=np.int64)
        id_list = ids.tolist()
        coords = boxes.tolist()
        now = now_utc()
        db.executemany(
            "INSERT INTO annotations(id, slide_id, x1, y1, x2, y2, label, source, created_at, created_by, atypical)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (i, slide_id, b[0], b[1], b[2], b[3], canonical_class(lab), str(source), now, self.reviewer, a)
                for i, b, lab, a in zip(id_list, coords, labels, flags)
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

    # -- HPF regions ----------------------------------------------------------------------------

    def add_hpf(self, slide_id: int, region: Sequence[float]) -> int:
        """Store a user-drawn high-power field (x, y, w, h in level-0 pixels); return its id (an identical
        field already stored is not stored again: its id is returned)."""
        x, y, w, h = check_region(region)
        self.slide(slide_id)
        with self._transaction() as db:
            same = db.execute(  # the same field marked twice is one field, counted once
                "SELECT id FROM hpf_regions WHERE slide_id = ? AND abs(x - ?) < 0.5 AND abs(y - ?) < 0.5"
                " AND abs(w - ?) < 0.5 AND abs(h - ?) < 0.5",
                (slide_id, x, y, w, h),
            ).fetchone()
            if same is not None:
                return int(same[0])
            cursor = db.execute(
                "INSERT INTO hpf_regions(slide_id, x, y, w, h, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (slide_id, x, y, w, h, now_utc(), self.reviewer),
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
            x, y, w, h = check_region(region)
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
            f" COALESCE(s.status, 'pending'), '', d.run_id{subtype.DETECTION_COLUMNS} FROM {detection_from} LEFT JOIN"
            f" object_state s ON s.object_kind = 'detection' AND s.object_id = d.id{subtype.DETECTION_JOIN}"
            " WHERE " + " AND ".join(detection_where)
            + " ORDER BY d.id"
        )
        annotation_sql = (
            "SELECT a.id, 'annotation', a.x1, a.y1, a.x2, a.y2, NULL, COALESCE(s.label, a.label),"
            f" COALESCE(s.status, 'ground truth'), a.source, -1{subtype.ANNOTATION_COLUMNS} FROM {annotation_from}"
            f" LEFT JOIN object_state s ON s.object_kind = 'annotation' AND s.object_id = a.id{subtype.ANNOTATION_JOIN}"
            " WHERE " + " AND ".join(annotation_where)
            + " ORDER BY a.id"
        )
        with self._lock, translated(self.path):
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


