"""The store's side of the append-only decision log: appending rows, undo and redo, the cached state.

Every decision is one row of ``decisions`` (never updated or deleted); ``object_state`` caches each
object's state in effect and is written in the same transaction as the row. Undo and redo append rows
pointing at their target and act on the current reviewer's own decisions only (the rules are in
:mod:`midog_viewer.review.log`). A mixin of :class:`~midog_viewer.review.store.ReviewStore`, which
provides ``_transaction``, ``_query``, ``reviewer`` and the subtype cache.
"""

from __future__ import annotations

import sqlite3

from midog_viewer.classes import canonical_class
from midog_viewer.errors import ReviewStoreError
from midog_viewer.review.log import LOG_SQL, Replay, replay, status_after
from midog_viewer.review.records import Decision, now_utc
from midog_viewer.review.status import ANNOTATION, DETECTION, HAND, Status, Verdict


class DecisionLog:
    """Log rows, undo/redo and the cached object state of a review store."""

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
            (slide_id, kind, object_id, verdict.value, label, target_id, reviewer or self.reviewer, now_utc()),
        )
        decision_id = int(cursor.lastrowid)
        if verdict not in (Verdict.UNDO, Verdict.REDO, Verdict.SUBTYPE):
            self._write_state(db, kind, object_id, slide_id, status_after(kind, verdict, label), label, decision_id)
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
        """Undo the reviewer's latest decision in effect on a slide (a new "undo" row); return the object id or None.

        Each reviewer undoes only their own decisions that still set their object's state: Alice's undo
        never takes back Bob's reject, nor her accept that his later reject overrode.
        """
        done = self.undo_decision(slide_id, reviewer)
        return None if done is None else done.object_id

    def redo(self, slide_id: int, reviewer: str | None = None) -> int | None:
        """Redo the reviewer's latest undone decision if they decided nothing since; return the object id or None."""
        done = self.redo_decision(slide_id, reviewer)
        return None if done is None else done.object_id

    def undo_decision(self, slide_id: int, reviewer: str | None = None) -> Decision | None:
        """As :meth:`undo`, returning the "undo" row written (its object kind and id), or None."""
        return self._undo_redo(slide_id, Verdict.UNDO, reviewer or self.reviewer)

    def redo_decision(self, slide_id: int, reviewer: str | None = None) -> Decision | None:
        """As :meth:`redo`, returning the "redo" row written, or None."""
        return self._undo_redo(slide_id, Verdict.REDO, reviewer or self.reviewer)

    def _undo_redo(self, slide_id: int, verdict: Verdict, reviewer: str) -> Decision | None:
        with self._transaction() as db:
            log = replay(db.execute(LOG_SQL, (slide_id,)).fetchall())
            target = log.undo_target(reviewer) if verdict is Verdict.UNDO else log.redo_target(reviewer)
            if target is None:
                return None
            row = log.rows[target]
            decision_id = self._log(db, slide_id, row.object_kind, row.object_id, verdict, row.label, target, reviewer)
            if verdict is Verdict.UNDO:
                log.apply_undo(target, reviewer)
            else:
                log.apply_redo(target)
            self._refresh_state(db, log, slide_id, row.object_kind, row.object_id)
            decided_at = db.execute("SELECT decided_at FROM decisions WHERE id = ?", (decision_id,)).fetchone()[0]
            return Decision(decision_id, slide_id, row.object_kind, row.object_id, verdict, row.label, target,
                            reviewer, decided_at)

    def _refresh_state(self, db: sqlite3.Connection, log: Replay, slide_id: int, kind: str, object_id: int) -> None:
        """Set one object's cached state (status and subtype) from the effective decisions of a replayed log."""
        self._refresh_subtype(db, log, slide_id, kind, object_id)
        last = log.last_effective(kind, object_id)
        if last is not None:
            self._write_state(
                db, kind, object_id, slide_id, status_after(kind, last.verdict, last.label), last.label, last.id
            )
            return
        db.execute("DELETE FROM object_state WHERE object_kind = ? AND object_id = ?", (kind, object_id))
        if kind == ANNOTATION:
            source, label = db.execute("SELECT source, label FROM annotations WHERE id = ?", (object_id,)).fetchone()
            if source == HAND:  # its "add" was undone: the annotation no longer exists
                self._write_state(db, kind, object_id, slide_id, Status.DELETED, label, 0)

    def replayed(self, slide_id: int) -> Replay:
        """A slide's decision log replayed: what is in effect, what each reviewer may undo or redo."""
        return replay(self._query(LOG_SQL, (slide_id,)))

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
            db.execute("DELETE FROM subtype_state")
            for (slide_id,) in db.execute("SELECT DISTINCT slide_id FROM decisions").fetchall():
                log = replay(db.execute(LOG_SQL, (slide_id,)).fetchall())
                touched = {(log.rows[d].object_kind, log.rows[d].object_id) for d in log.rows}
                for kind, object_id in sorted(touched):
                    self._refresh_state(db, log, slide_id, kind, object_id)
