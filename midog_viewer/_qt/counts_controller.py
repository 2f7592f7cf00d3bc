"""The review dock's counts: recomputed in a worker a moment after each change, shown in the counts panel.

The controller follows the review session's events (objects or HPFs changed) and the view (camera, threshold,
HPF area), coalesces them on a short timer, and reads the figures through a second connection to the review
database, so counting 100,000 objects never blocks the decisions the GUI thread writes meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import QObject, QTimer, Signal
from superqt.utils import thread_worker

from midog_viewer._qt import notify
from midog_viewer._qt.counts_panel import CountsPanel
from midog_viewer.review.session import ReviewSession
from midog_viewer.review.store import ReviewStore

#: Time after a change before the counts are recomputed, so the key press itself stays instant (ms).
COUNTS_DELAY_MS = 150

Region = tuple[float, float, float, float]


def figures(session: ReviewSession, reader: ReviewStore, view: Region | None, hpf: Region | None, hpf_mm2: float,
            threshold: float) -> dict:
    """Everything the counts panel shows, read through ``reader``. Runs in a worker thread."""

    objects = reader.objects(session.slide_id)  # one read for the four counts below: one snapshot

    def totals(region):
        counts = session.counts(region, hpf_mm2, store=reader, objects=objects)
        return {**counts.totals, "pending": session.pending_count(threshold, region)}

    return {
        "session": session,
        # no score or F1 before the slide was analysed: the ground truth alone is not the reviewed count
        "analysed": bool(reader.detection_runs(session.slide_id)),
        "view": None if view is None else totals(view),
        "hpf": None if hpf is None else totals(hpf),
        "hpf_region": hpf,
        "image": totals(None),
        # the score uses the HPFs the reviewer marked when there are any, else the hotspot
        "score": session.counts(None, hpf_mm2, use_drawn=True, store=reader, objects=objects),
        "f1": session.evaluation(threshold, view, store=reader)[0] if session.has_ground_truth() else None,
    }


class CountsController(QObject):
    """Keeps ``panel`` current for the session given to :meth:`follow`; ``shown`` carries each result shown
    (the dock outlines its current HPF and hotspot from it).

    ``view`` and ``current_hpf`` give the level-0 regions of the screen and of the HPF at its centre,
    ``threshold`` the score threshold in use (all read when a count starts).
    """

    shown = Signal(object)

    def __init__(self, panel: CountsPanel, store: Callable[[], ReviewStore], view: Callable[[], Region | None],
                 current_hpf: Callable[[], Region | None], threshold: Callable[[], float],
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.panel = panel
        self._store, self._view, self._current_hpf, self._threshold = store, view, current_hpf, threshold
        self.session: ReviewSession | None = None
        self.worker = None
        self._stale = False
        self._reader_store: ReviewStore | None = None
        self.timer = QTimer(self, singleShot=True, interval=COUNTS_DELAY_MS, timeout=self.update)

    def follow(self, session: ReviewSession | None) -> None:
        """Count ``session`` (None: nothing open, the panel cleared) and recount whenever it changes."""
        self.session = session
        if session is None:
            self.timer.stop()
            self.clear()
            return
        session.events.objects_changed.connect(self.schedule)
        session.events.hpfs_changed.connect(self.schedule)
        self.schedule()

    def clear(self, reason: str = "") -> None:
        """Nothing computed: no figure shows (never a stale or made-up one)."""
        for row in ("view", "hpf", "image"):
            self.panel.show_counts(row, None)
        self.panel.show_score(None, reason)
        self.panel.show_f1(None)

    def schedule(self, _change=None) -> None:
        self.timer.start()

    def update(self, wait: bool = False) -> None:
        """Recompute the counts rows, the mitotic score and the live F1 (``wait``: in the calling thread)."""
        session = self.session
        if session is None:
            return
        if not session.mpp:
            self.clear("(the slide has no pixel size, so HPFs have no size)")
            return
        if self.worker is not None:  # one at a time; count again when it is done
            self._stale = True
            if not wait:
                return
        # A worker reads through its own connection; counting here uses the main one (a worker may be in flight).
        store = self._store()
        reader = store if wait else self._reader(store)
        request = (session, reader, self._view(), self._current_hpf(), self.panel.hpf_area.value(), self._threshold())
        if wait:
            self._show(figures(*request))
            return
        self._stale = False
        self.worker = thread_worker(figures, start_thread=False, ignore_errors=True)(*request)
        self.worker.returned.connect(self._show)
        self.worker.errored.connect(lambda exc: notify.show_error(str(exc)))
        self.worker.finished.connect(self._done)
        self.worker.start()

    def _reader(self, store: ReviewStore) -> ReviewStore:
        """A second connection to the review database for the counts worker, opened once."""
        if self._reader_store is None or self._reader_store.path != store.path:
            self._reader_store = ReviewStore(store.path, store.reviewer)
        return self._reader_store

    def _done(self) -> None:
        self.worker = None
        if self._stale:
            self.schedule()

    def _show(self, result: dict) -> None:
        if result["session"] is not self.session:  # the slide changed while counting
            return
        for row in ("view", "hpf", "image"):
            self.panel.show_counts(row, result[row])
        self.shown.emit(result)
        if not result["analysed"]:
            self.panel.show_score(None, "(no detection on this slide yet)")
            self.panel.show_f1(None)
            return
        self.panel.show_score(result["score"])
        self.panel.show_f1(result["f1"])

    def close(self) -> None:
        self.timer.stop()
        if self._reader_store is not None:
            self._reader_store.close()
            self._reader_store = None
