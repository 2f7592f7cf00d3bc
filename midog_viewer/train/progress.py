"""The run folder's ``progress.jsonl``: one JSON object per line, written by training, tailed by the GUI.

Events (field ``event``): ``start`` (run set-up), ``baseline`` (validation F1 of the starting model),
``step`` (step, epoch, losses, loss, lr, eta_s), ``epoch`` (epoch, val_f1, tp/fp/fn, checkpoint),
``cancelled`` and ``done``. Lines are appended and flushed one at a time; a reader leaves a last line
that is still being written for its next call.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROGRESS_FILE = "progress.jsonl"


class ProgressWriter:
    """Appends events to ``progress.jsonl`` (appending, so a resumed run continues the same file).

    ``echo``, if given, also receives every event (the CLI prints them).
    """

    def __init__(self, run_dir: str | Path, echo: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.path = Path(run_dir) / PROGRESS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.echo = echo

    def write(self, event: str, **fields: Any) -> dict[str, Any]:
        record = {"event": event, "time": round(time.time(), 3), **fields}
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
        if self.echo is not None:
            self.echo(record)
        return record


class ProgressReader:
    """Reads the complete lines added to ``progress.jsonl`` since the last call (for polling from a GUI)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / PROGRESS_FILE
        self._offset = 0

    def new_events(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as fh:
            fh.seek(self._offset)
            chunk = fh.read()
        end = chunk.rfind(b"\n")
        if end < 0:
            return []
        self._offset += end + 1
        events = []
        for line in chunk[: end + 1].splitlines():
            if line.strip():
                events.append(json.loads(line))
        return events


def read_progress(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every complete event of a run so far."""
    return ProgressReader(run_dir).new_events()
