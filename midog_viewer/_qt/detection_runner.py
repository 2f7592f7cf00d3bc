"""Detection runs of the review dock: one superqt worker at a time, its cancel flag and the progress bar.

A run stores each batch in the review session as it arrives (the overlay and counts follow the session's
events). ``wait=True`` (scripts, tests) starts the same worker and waits for it in a local event loop, so
there is one code path: batches, errors and the end of a run are handled the same way either way.
superqt's ``thread_worker`` is used rather than napari's (whose status callback fails on a worker error
in napari 0.9.2).
"""

from __future__ import annotations

import functools
import threading

from qtpy.QtCore import QEventLoop, QObject, Qt, QTimer, Signal
from qtpy.QtWidgets import QCheckBox, QGroupBox, QHBoxLayout, QLabel, QProgressBar, QPushButton, QSlider, QVBoxLayout
from superqt.utils import thread_worker

from midog_viewer._qt import notify
from midog_viewer._qt.model_panel import DETECTION_FLOOR
from midog_viewer._qt.notify import NO_SLIDE, reports_errors
from midog_viewer.errors import MidogError
from midog_viewer.review.navigation import DoneRegions
from midog_viewer.review.session import ReviewSession

Region = tuple[int, int, int, int]
#: Quiet time after the last pan or zoom before "auto-detect" analyses the view (ms).
SETTLE_MS = 400


class DetectionFailed(Exception):
    """A detection worker's exception, carried to the GUI thread."""


def _surfacing_errors(batches, slide=None, classifier=None):
    """Run the detector's generator in the worker, yielding (progress, p_atypical or None): the atypical
    classifier scores each batch's mitotic figures there too (as ``detect`` does). RuntimeError (what torch
    raises) is re-raised as :class:`DetectionFailed`: superqt takes a RuntimeError for a deleted worker and
    only warns, which would leave the widget waiting for a run that is over."""
    from midog_viewer.atypical import atypical_scores

    try:
        for progress in batches:
            found = progress.detections
            scored = classifier is not None and len(found)
            yield progress, atypical_scores(slide, found, classifier) if scored else None
    except RuntimeError as exc:
        raise DetectionFailed(str(exc)) from exc


class _Run:
    """One run's worker, cancel flag, session and region: late signals of an older run find theirs, not the new one's."""

    def __init__(self, session: ReviewSession, run_id: int, region: Region) -> None:
        self.session: ReviewSession | None = session
        self.run_id = run_id
        self.region = region
        self.cancel = threading.Event()
        self.failed = False
        self.worker = None


class DetectionRunner(QObject):
    """Runs a detector over one region of a slide, storing its batches in a session.

    Signals (GUI thread): ``started(message)``, ``ended(message, completed_region)`` where the region is
    None unless the run covered it to the end, and ``failed(message)`` (a one-line reason).
    """

    started = Signal(str)
    ended = Signal(str, object)
    failed = Signal(str)

    def __init__(self, progress: QProgressBar, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.progress = progress
        self._run: _Run | None = None
        #: The atypical classifier that scores new detections (None: the shipped one).
        self.classifier_path: str | None = None
        self.reset_progress()

    @property
    def worker(self):
        """The running worker, None when idle."""
        return None if self._run is None else self._run.worker

    @property
    def region(self) -> Region | None:
        """The region being analysed, None when idle."""
        return None if self._run is None else self._run.region

    def is_running(self) -> bool:
        return self._run is not None

    def reset_progress(self) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(0)

    def run(self, session: ReviewSession, detector, slide, region: Region, params: dict, *,
            model: str, tile_filter=None, message: str = "", wait: bool = False, classifier=None) -> None:
        """Record a run of ``model`` on ``region`` and detect there in the worker (``wait``: until it ends);
        ``classifier`` (an :class:`~midog_viewer.atypical.AtypicalNet`) gives each mitotic figure p_atypical."""
        self.cancel()
        threshold = None if classifier is None else classifier.config.threshold
        run = _Run(session, session.start_run(model, params, atypical_threshold=threshold), region)
        batches = detector.iter_detect(slide, region, cancel=run.cancel, tile_filter=tile_filter)
        run.worker = thread_worker(_surfacing_errors, start_thread=False, ignore_errors=True)(batches, slide, classifier)
        run.worker.yielded.connect(functools.partial(self._on_batch, run))
        run.worker.errored.connect(functools.partial(self._on_error, run))
        run.worker.finished.connect(functools.partial(self._on_finished, run))
        self._run = run
        self.progress.setRange(0, 0)  # busy until the first batch says how many tiles
        self.started.emit(message)
        loop = QEventLoop() if wait else None
        if loop is not None:
            run.worker.finished.connect(loop.quit)
        run.worker.start()
        if loop is not None:
            loop.exec_()

    def detect(self, session: ReviewSession, detector, slide, region: Region, *, model: str, threshold: float,
               floor: float, tissue_only: bool = False, wait: bool = False) -> None:
        """Detect with ``detector`` (keeping candidates down to ``floor``) on a level-0 region of ``slide``.

        ``tissue_only`` (the whole image) searches only tiles that hold tissue and records the tissue fraction;
        the run's parameters go to the store with it.
        """
        zoom = detector.zoom_for(slide)
        tissue_fraction, tile_filter = None, None
        if tissue_only:
            from midog_viewer.detect.tissue import detect_tissue, tissue_filter

            tissue = detect_tissue(slide)
            tissue_fraction, tile_filter = tissue.fraction, tissue_filter(tissue)
        params = {"region": list(map(int, region)), "score_thr": floor, "operating_thr": threshold,
                  "stain_normalize": detector.stain_normalize, "resample_zoom": zoom, "tissue_fraction": tissue_fraction}
        resampled = "" if zoom == 1.0 else f" (tiles resampled x{zoom:.2f} to the model's {detector.model_mpp:.2f} µm/px)"
        searched = "" if tissue_fraction is None else f", tissue {tissue_fraction:.0%} of the image"
        from midog_viewer.atypical import shared_classifier

        self.run(session, detector, slide, region, params, model=model, tile_filter=tile_filter, wait=wait,
                 classifier=shared_classifier(self.classifier_path), message=f"Detecting in {region[2]}×{region[3]} px{resampled}{searched}…")

    def cancel_outside(self, view: Region | None) -> None:
        """Cancel a run whose region no longer overlaps the view (moved away: the rest is not wanted now)."""
        if self.region is None:
            return
        x, y, w, h = self.region
        if view is None or view[0] >= x + w or view[1] >= y + h or view[0] + view[2] <= x or view[1] + view[3] <= y:
            self.cancel()

    def cancel(self) -> None:
        """Stop a running detection after its current batch."""
        if self._run is not None:
            self._run.cancel.set()
            self._run.worker.quit()

    def abandon(self) -> None:
        """The slide went away: cancel, drop what the worker still sends, and reset the progress bar."""
        if self._run is not None:
            self.cancel()
            self._run.session = None
        self.reset_progress()

    def _on_batch(self, run: _Run, item) -> None:
        if run.session is None:  # the slide was closed while this batch was on its way
            return
        progress, p_atypical = item
        found = progress.detections
        run.session.add_detections(run.run_id, found.boxes, found.scores, found.label_names(), p_atypical)
        if run is self._run:
            self.progress.setRange(0, max(1, progress.total))
            self.progress.setValue(progress.done)

    def _on_error(self, run: _Run, exc: Exception) -> None:
        run.failed = True  # a failed run is not a completed region
        if run.session is not None:
            self.failed.emit(str(exc) if isinstance(exc, MidogError) else f"detection failed: {exc}")

    def _on_finished(self, run: _Run) -> None:
        if run is not self._run:  # an older run, replaced meanwhile
            return
        self._run = None
        if run.session is None:
            self.reset_progress()
            self.ended.emit("Detection stopped: the image was closed.", None)
        elif run.failed:
            self.ended.emit("Detection failed.", None)
        elif run.cancel.is_set():
            self.ended.emit("Detection cancelled.", None)
        else:
            self.ended.emit("Detection done.", run.region)


class DetectionPanel(QGroupBox):
    """The "Detection" box of the review dock: score threshold, detect and cancel buttons, auto-detect, progress
    and status line, and what they start: runs of the dock's model (:class:`DetectionRunner`) on the regions
    of the dock's slide that this model has not analysed yet (``done_regions``).
    """

    def __init__(self, dock, threshold: float) -> None:
        super().__init__("Detection")
        self.dock = dock
        self.done_regions = DoneRegions()
        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(QLabel("Score threshold"))
        self.threshold = QSlider(Qt.Horizontal)
        self.threshold.setRange(int(DETECTION_FLOOR * 100), 100)
        self.threshold.setValue(int(threshold * 100))
        self.threshold_label = QLabel(f"{threshold:.2f}")
        self.threshold.valueChanged.connect(lambda v: self.threshold_label.setText(f"{v / 100:.2f}"))
        row.addWidget(self.threshold)
        row.addWidget(self.threshold_label)
        layout.addLayout(row)
        buttons = QHBoxLayout()
        self.detect_view_button = QPushButton("Detect visible region")
        self.detect_view_button.clicked.connect(lambda: self.detect_visible())
        self.detect_all_button = QPushButton("Detect whole image")
        self.detect_all_button.clicked.connect(lambda: self.detect_whole())
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        for button in (self.detect_view_button, self.detect_all_button, self.cancel_button):
            buttons.addWidget(button)
        layout.addLayout(buttons)
        self.auto_detect = QCheckBox("Auto-detect when the view settles")
        layout.addWidget(self.auto_detect)
        self.progress = QProgressBar()
        layout.addWidget(self.progress)
        self.status = QLabel("Open a slide or the synthetic sample to start.")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.runner = DetectionRunner(self.progress, self)
        self.cancel_button.clicked.connect(self.runner.cancel)
        self.runner.started.connect(lambda message: self._show_running(True, message))
        self.runner.ended.connect(self._on_ended)
        self.runner.failed.connect(lambda message: notify.show_error(message))
        self.settle = QTimer(self, singleShot=True, interval=SETTLE_MS, timeout=self._on_view_settled)

    @reports_errors
    def use_atypical_model(self, path: str | None) -> None:
        """Score the p_atypical of new detections with the classifier at ``path`` (None: the shipped one); a file
        that is not a classifier is one notification and changes nothing. Stored detections keep their scores."""
        from midog_viewer.atypical import shared_classifier

        path = None if path is None else str(path)
        threshold = shared_classifier(path).config.threshold  # loaded (and checked) now, not at the next run
        self.runner.classifier_path = path
        self.status.setText(f"Atypical classifier: {path or 'the shipped one'} (threshold {threshold:.2f}); "
                            "it scores new detections.")

    def _show_running(self, running: bool, message: str) -> None:
        for button in (self.detect_view_button, self.detect_all_button):
            button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.dock.model_panel.set_enabled(not running)
        self.status.setText(message)

    def detect_visible(self, wait: bool = False) -> None:
        """Analyse the part of the view not yet analysed by this model."""
        region, slide = self.dock.visible_region(), self.dock.slide
        if region is None:
            notify.show_info(NO_SLIDE)
            return
        self.detect_region(self.done_regions.missing(self.dock.model_panel.key(), region, (slide.width, slide.height)),
                           wait=wait)

    def detect_whole(self, wait: bool = False) -> None:
        """Analyse the whole image (with progress; Cancel or Esc stops it)."""
        slide = self.dock.slide
        if slide is None:
            notify.show_info(NO_SLIDE)
            return
        self.detect_region((0, 0, slide.width, slide.height), wait=wait, tissue_only=True)

    @reports_errors
    def detect_region(self, region: Region | None, wait: bool = False, tissue_only: bool = False) -> None:
        """Run the model on a level-0 region in the worker; ``wait=True`` (scripts, tests) returns once it ends.

        ``tissue_only`` (the whole image) searches only tiles that hold tissue and records the tissue fraction.
        """
        dock, model = self.dock, self.dock.model_panel
        if dock.session is None or region is None:
            return
        if model.detector is None:
            notify.show_error("No detection model is loaded; load a checkpoint first.")
            return
        model.warn_if_synthetic(dock.slide.path)
        self.runner.detect(dock.session, model.detector, dock.slide, region, model=model.label, wait=wait,
                           threshold=dock.score_threshold, floor=DETECTION_FLOOR, tissue_only=tissue_only)

    def _on_ended(self, message: str, completed: Region | None) -> None:
        self._show_running(False, message)
        dock = self.dock
        if dock.session is None:
            return
        if completed is not None:
            self.done_regions.mark_done(dock.model_panel.key(), completed, (dock.slide.width, dock.slide.height))
        if dock.view.painter.evaluation_colours():
            dock.rebuild_overlay()

    def on_camera(self) -> None:
        """The view moved: auto-detect once it settles, and stop a run the view has left."""
        if self.dock.session is None:
            return
        self.settle.start()
        self.runner.cancel_outside(self.dock.visible_region())

    def _on_view_settled(self) -> None:
        self.dock.schedule_counts()
        if self.auto_detect.isChecked() and not self.runner.is_running():
            self.detect_visible()
