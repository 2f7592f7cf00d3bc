"""The subtype of a mitotic figure (normal or atypical) in the review store: the model's call and the reviewer's.

A detection's default subtype is the classifier's call, ``p_atypical >= threshold``, with the threshold its
detection run recorded; an imported annotation's is what its file said. A reviewer's "subtype" decision
(one more row of the append-only log, undone and redone like any other: :mod:`midog_viewer.review.log`)
overrides the default; ``subtype_state`` caches the decision in effect, written in the same transaction.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from midog_viewer.errors import ReviewStoreError
from midog_viewer.review.log import Replay
from midog_viewer.review.status import DETECTION, Verdict

ATYPICAL = "atypical"
NORMAL = "normal"

#: Joins and select expressions :meth:`ReviewStore.objects` adds: p_atypical, the subtype (1/0/NULL), decided.
DETECTION_JOIN = (" LEFT JOIN detection_runs run ON run.id = d.run_id LEFT JOIN subtype_state t"
                  " ON t.object_kind = 'detection' AND t.object_id = d.id")
DETECTION_COLUMNS = (", d.p_atypical, COALESCE(t.atypical, CASE WHEN d.p_atypical IS NULL OR run.atypical_threshold"
                     " IS NULL THEN NULL ELSE d.p_atypical >= run.atypical_threshold END), t.atypical IS NOT NULL")
ANNOTATION_JOIN = " LEFT JOIN subtype_state t ON t.object_kind = 'annotation' AND t.object_id = a.id"
ANNOTATION_COLUMNS = ", NULL, COALESCE(t.atypical, a.atypical), t.atypical IS NOT NULL"


def subtype_flags(values: Any, n: int, what: str) -> list[int | None]:
    """``values`` (None, or one bool/0/1/None per object) as a list of 1/0/None, checked against ``n``."""
    if values is None:
        return [None] * n
    flags = [None if v is None or v != v else int(bool(v)) for v in list(values)]
    if len(flags) != n:
        raise ReviewStoreError(f"{what} need one subtype per box ({n} boxes, {len(flags)} subtypes).")
    return flags


def probabilities(values: Any, n: int) -> list[float | None]:
    """``p_atypical`` per detection (None/NaN: not classified) as a checked list."""
    if values is None:
        return [None] * n
    out = [None if v is None or v != v else float(v) for v in list(values)]
    if len(out) != n:
        raise ReviewStoreError(f"detections need one p_atypical per box ({n} boxes, {len(out)} values).")
    if any(p is not None and not 0.0 <= p <= 1.0 for p in out):
        raise ReviewStoreError("p_atypical must be a probability in [0, 1].")
    return out


class SubtypeDecisions:
    """The store's subtype decisions (mixed into :class:`~midog_viewer.review.store.ReviewStore`)."""

    def decide_subtype(self, kind: str, object_id: int, atypical: bool, reviewer: str | None = None) -> int:
        """Log a reviewer's subtype of a detection or annotation, committed before returning; return the row id."""
        table = "detections" if kind == DETECTION else "annotations"
        with self._transaction() as db:  # type: ignore[attr-defined]
            row = db.execute(f"SELECT slide_id FROM {table} WHERE id = ?", (int(object_id),)).fetchone()
            if row is None:
                raise ReviewStoreError(f"there is no {kind} with id {object_id}.")
            label = ATYPICAL if atypical else NORMAL
            decision_id = self._log(  # type: ignore[attr-defined]
                db, int(row[0]), kind, int(object_id), Verdict.SUBTYPE, label, None, reviewer)
            self._write_subtype(db, kind, int(object_id), int(row[0]), label, decision_id)
            return decision_id

    @staticmethod
    def _write_subtype(db: sqlite3.Connection, kind: str, object_id: int, slide_id: int, label: str,
                       decision_id: int) -> None:
        db.execute(
            "INSERT OR REPLACE INTO subtype_state(object_kind, object_id, slide_id, atypical, decision_id)"
            " VALUES (?, ?, ?, ?, ?)",
            (kind, object_id, slide_id, int(label == ATYPICAL), decision_id),
        )

    def _refresh_subtype(self, db: sqlite3.Connection, log: Replay, slide_id: int, kind: str, object_id: int) -> None:
        """Set one object's cached subtype from the subtype decision in effect (none: the default again)."""
        last = log.last_effective(kind, object_id, subtype=True)
        if last is None:
            db.execute("DELETE FROM subtype_state WHERE object_kind = ? AND object_id = ?", (kind, object_id))
        else:
            self._write_subtype(db, kind, object_id, slide_id, last.label or NORMAL, last.id)
