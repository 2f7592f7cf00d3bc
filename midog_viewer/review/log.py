"""Replaying the decision log: which decisions are in effect, and what each reviewer may undo or redo.

The log is append-only. An undo row names the decision it takes back, a redo row the undone decision it
puts back; replay applies exactly what the rows say, so the state derived from the log never depends on
which rule chose the target when the row was written. The rule (see :meth:`Replay.undo_target`) is per
reviewer: Alice's undo takes back Alice's latest decision that still sets its object's state, never Bob's,
and never one of hers that a later decision overrode (undoing it would change nothing, and her redo would
then overturn the later decision); her redo stack is cleared only by her own new decisions. A redo puts
its decision back where it was in the log, so an undo followed by a redo leaves every state as it was.
An object has two states a decision may set, its status and its subtype (a "subtype" row): a decision
overrides only earlier ones on the same state, so Bob's accept does not overrule Alice's subtype.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from midog_viewer.classes import MITOTIC_FIGURE
from midog_viewer.review.status import Status, Verdict

#: The log of one slide in order, as :func:`replay` reads it.
LOG_SQL = (
    "SELECT id, object_kind, object_id, verdict, label, target_id, reviewer FROM decisions"
    " WHERE slide_id = ? ORDER BY id"
)


@dataclass(frozen=True)
class LogRow:
    """A decision that sets a state (not an undo or redo row)."""

    id: int
    object_kind: str
    object_id: int
    verdict: Verdict
    label: str | None
    target_id: int | None
    reviewer: str


    @property
    def channel(self) -> tuple[str, int, bool]:
        """The state this row sets: (kind, id, whether it is the subtype rather than the status)."""
        return self.object_kind, self.object_id, self.verdict is Verdict.SUBTYPE


@dataclass
class Replay:
    """A replayed log of one slide.

    ``done`` holds the decisions in effect in log (id) order (a redo puts its decision back in its place,
    so a later decision on the same object keeps winning); ``undone`` each reviewer's redo stack.
    """

    rows: dict[int, LogRow] = field(default_factory=dict)
    done: dict[int, None] = field(default_factory=dict)
    undone: dict[str, list[int]] = field(default_factory=dict)

    def undo_target(self, reviewer: str) -> int | None:
        """The decision ``reviewer``'s undo takes back: their latest one that still sets its object's state."""
        latest: set[tuple[str, int, bool]] = set()  # states whose deciding row was already passed
        for d in reversed(self.done):
            row = self.rows[d]
            obj = row.channel
            if obj in latest:
                continue
            latest.add(obj)
            if row.reviewer == reviewer:
                return d
        return None

    def overruled(self, reviewer: str) -> int:
        """How many of ``reviewer``'s decisions are in effect but overridden by a later one of someone else."""
        deciding = {row.channel: row.reviewer for row in map(self.rows.get, self.done)}
        mine = (self.rows[d] for d in self.done if self.rows[d].reviewer == reviewer)
        return sum(1 for row in mine if deciding[row.channel] != reviewer)

    def redo_target(self, reviewer: str) -> int | None:
        """The decision ``reviewer``'s redo puts back: the last one they undid, if they decided nothing since."""
        stack = self.undone.get(reviewer)
        return stack[-1] if stack else None

    def last_effective(self, kind: str, object_id: int, subtype: bool = False) -> LogRow | None:
        """The decision in effect that set an object's current status (``subtype``: its subtype), if any."""
        for d in reversed(self.done):
            row = self.rows[d]
            if row.object_kind == kind and row.object_id == object_id and (row.verdict is Verdict.SUBTYPE) == subtype:
                return row
        return None

    def apply_undo(self, target: int, reviewer: str) -> None:
        if target in self.done:
            del self.done[target]
            self.undone.setdefault(reviewer, []).append(target)

    def apply_redo(self, target: int) -> None:
        for stack in self.undone.values():
            if target in stack:
                stack.remove(target)
                self._put_back(target)
                return

    def _put_back(self, target: int) -> None:
        """Insert ``target`` into ``done`` at its place in id order (usually the end: a no-op reorder)."""
        if not self.done or target > next(reversed(self.done)):
            self.done[target] = None
            return
        ordered = sorted((*self.done, target))
        self.done.clear()
        self.done.update(dict.fromkeys(ordered))


_VERDICTS = {v.value: v for v in Verdict}


def replay(rows: Iterable[tuple]) -> Replay:
    """Replay a slide's log, rows as :data:`LOG_SQL` selects them (one pass, no per-row enum lookups)."""
    log = Replay()
    done, kept, undone = log.done, log.rows, log.undone
    for row_id, kind, object_id, verdict, label, target, reviewer in rows:
        if verdict == "undo":
            log.apply_undo(target, reviewer)
        elif verdict == "redo":
            log.apply_redo(target)
        else:
            kept[row_id] = LogRow(row_id, kind, object_id, _VERDICTS[verdict], label, target, reviewer)
            done[row_id] = None
            if undone:
                undone.pop(reviewer, None)
    return log


def status_after(kind: str, verdict: Verdict, label: str | None) -> Status:
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
