"""The tile ledger: which tiles of a batch run are detected and stored, kept in the review store's own file.

Two tables beside the store's (created with ``CREATE TABLE IF NOT EXISTS`` on its connection, so the store's
schema is untouched and a store without them is still valid):

    batch_runs(run_id → detection_runs.id, slide_id, run_key, plan JSON, tiles, finished_at)
    batch_tiles(run_id, tile)          one row per finished tile (index into the plan's tiles)

A batch's detections and its ``batch_tiles`` rows are written in one transaction, so after a kill at any
moment a tile is either finished with its detections stored, or not finished and nothing of it is stored:
a resume runs exactly the unfinished tiles. ``run_key`` names the model and settings; a slide with a
finished run of the same key is not detected again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from midog_viewer.review.store import ReviewStore

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS batch_runs (
        run_id INTEGER PRIMARY KEY REFERENCES detection_runs(id),
        slide_id INTEGER NOT NULL REFERENCES slides(id),
        run_key TEXT NOT NULL,
        plan TEXT NOT NULL,
        tiles INTEGER NOT NULL,
        finished_at TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS batch_runs_by_slide ON batch_runs(slide_id, run_key)",
    """CREATE TABLE IF NOT EXISTS batch_tiles (
        run_id INTEGER NOT NULL REFERENCES batch_runs(run_id),
        tile INTEGER NOT NULL,
        PRIMARY KEY (run_id, tile)
    ) WITHOUT ROWID""",
)


@dataclass
class LedgerRun:
    """A batch run of one slide: its detection run, plan (as planned by a worker) and finished tiles."""

    run_id: int
    slide_id: int
    plan: dict[str, Any]
    done: set[int]
    finished: bool


class Ledger:
    """The ledger tables on ``store``'s connection; every write joins the store's transaction."""

    def __init__(self, store: ReviewStore) -> None:
        self.store = store
        with store.transaction() as db:
            for statement in _SCHEMA:
                db.execute(statement)

    def latest(self, slide_id: int, run_key: str) -> LedgerRun | None:
        """The newest batch run of this slide with these settings, or None."""
        with self.store.transaction() as db:
            row = db.execute(
                "SELECT run_id, plan, finished_at FROM batch_runs WHERE slide_id = ? AND run_key = ?"
                " ORDER BY run_id DESC LIMIT 1", (slide_id, run_key),
            ).fetchone()
            if row is None:
                return None
            done = {int(r[0]) for r in db.execute("SELECT tile FROM batch_tiles WHERE run_id = ?", (row[0],))}
        return LedgerRun(int(row[0]), slide_id, json.loads(row[1]), done, row[2] is not None)

    def start(self, slide_id: int, run_key: str, model: str, params: dict, plan: dict[str, Any],
              atypical_threshold: float | None = None) -> LedgerRun:
        """Record a detection run (the store's own record, with ``params`` and the atypical classifier's
        threshold) and its plan, atomically."""
        with self.store.transaction() as db:
            run_id = self.store.add_detection_run(slide_id, model, params, atypical_threshold)
            db.execute(
                "INSERT INTO batch_runs(run_id, slide_id, run_key, plan, tiles) VALUES (?, ?, ?, ?, ?)",
                (run_id, slide_id, run_key, json.dumps(plan), len(plan["tiles"])),
            )
        return LedgerRun(run_id, slide_id, plan, set(), False)

    def commit_tiles(self, run: LedgerRun, tiles: list[int], boxes: np.ndarray, scores: np.ndarray,
                     labels: list[str], p_atypical: Any = None) -> None:
        """Store one batch's detections (with p_atypical) and mark its tiles finished, in one transaction."""
        with self.store.transaction() as db:
            if len(boxes):
                self.store.add_detections(run.run_id, boxes, scores, labels, p_atypical)
            db.executemany("INSERT INTO batch_tiles(run_id, tile) VALUES (?, ?)", ((run.run_id, t) for t in tiles))
        run.done.update(tiles)

    def finish(self, run: LedgerRun) -> None:
        """Mark the run finished: every planned tile is stored."""
        with self.store.transaction() as db:
            db.execute("UPDATE batch_runs SET finished_at = ? WHERE run_id = ?",
                       (datetime.now(timezone.utc).isoformat(timespec="seconds"), run.run_id))
        run.finished = True

    def tiles_done(self, run_id: int) -> int:
        """How many tiles of a run are finished (tests and progress)."""
        with self.store.transaction() as db:
            return int(db.execute("SELECT COUNT(*) FROM batch_tiles WHERE run_id = ?", (run_id,)).fetchone()[0])
