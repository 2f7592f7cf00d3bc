"""The "Mitosis review" dock: detect what is on screen, judge each box with one key, count and export.

Composition plus keys. The review state is a :class:`~midog_viewer.review.session.ReviewSession` (each
decision committed to the review store before the key handler returns); what shows follows the session's
events: the boxes (:class:`~midog_viewer._qt.overlay.OverlayPainter` over the
:class:`~midog_viewer._qt.overlay.ReviewOverlay` layers), the counts
(:class:`~midog_viewer._qt.counts_controller.CountsController`) and the HPF layers
(:class:`~midog_viewer._qt.hpf_layers.HpfLayers`). Detection runs in the
:class:`~midog_viewer._qt.detection_runner.DetectionRunner`, the model in the
:class:`~midog_viewer._qt.model_panel.ModelPanel`. The slide is the image layer whose ``metadata["slide"]``
holds a :class:`~midog_viewer.io.Slide` (what our reader and sample put there).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
from napari.layers import Image
from qtpy.QtCore import Qt, QThreadPool, QTimer
from qtpy.QtWidgets import QAbstractButton, QAbstractSlider, QComboBox, QVBoxLayout, QWidget

from midog_viewer._qt import notify
from midog_viewer._qt.counts_actions import CountsActions
from midog_viewer._qt.cohort_panel import CohortPanel
from midog_viewer._qt.counts_controller import CountsController
from midog_viewer._qt.counts_panel import CountsPanel
from midog_viewer._qt.detection_runner import DetectionPanel, DetectionRunner
from midog_viewer._qt.hpf_layers import HpfLayers
from midog_viewer._qt.legend import Legend
from midog_viewer._qt.model_panel import ModelPanel
from midog_viewer._qt.notify import NO_SLIDE
from midog_viewer._qt.notify import reports_errors as _reports_errors
from midog_viewer._qt.overlay import ReviewOverlay
from midog_viewer._qt.slide_view import SlideView
from midog_viewer._qt.scroll_area import in_scroll_area
from midog_viewer._qt.review_box import ReviewBox
from midog_viewer.review.cohort import cohort_rows
from midog_viewer.review.navigation import box_at, reading_order, step_in_order
from midog_viewer.review.session import IDLE_CHECKPOINT_S, ReviewSession, open_default_store
from midog_viewer.review.store import ReviewStore

DEFAULT_THRESHOLD = 0.5


def _forward(part: str, method: Callable) -> Callable:
    """A dock method that calls ``method`` on the dock's ``part`` (same name, arguments and docstring): the dock
    keeps its whole scripting surface while each concern lives in its own class."""

    @functools.wraps(method)
    def forwarded(self, *args, **kwargs):
        return method(getattr(self, part), *args, **kwargs)

    return forwarded


def keep_keys_on_the_canvas(dock: QWidget) -> None:
    """No dock control takes keyboard focus: Space, A, R, H… always reach the canvas, whatever was clicked
    (a focused button would be pressed again by every Space)."""
    for control in dock.findChildren(QAbstractButton) + dock.findChildren(QAbstractSlider) + dock.findChildren(QComboBox):
        control.setFocusPolicy(Qt.NoFocus)


#: The review keys (napari key names) and what each does on the dock.
REVIEW_KEYS: dict[str, Callable[[ReviewWidget], None]] = {
    "a": lambda dock: dock.decide("accept"),
    "r": lambda dock: dock.decide("reject"),
    "h": lambda dock: dock.decide("hard negative"),
    "t": lambda dock: dock.toggle_atypical(),
    "n": lambda dock: dock.step(forward=True),
    "Space": lambda dock: dock.step(forward=True),
    "p": lambda dock: dock.step(forward=False),
    "Control-Z": lambda dock: dock.undo(),
    "Control-Shift-Z": lambda dock: dock.redo(),
    "Escape": lambda dock: dock.cancel_detection(),
}


class ReviewWidget(QWidget):
    """Dock widget of the review workflow (contributed to napari as "Mitosis review").

    ``detector`` and ``store`` default to the built-in model made for the open image and the per-user review
    database (:func:`~midog_viewer.review.session.default_db_path`); tests and the demo pass their own.
    """

    def __init__(self, napari_viewer, detector=None, store: ReviewStore | None = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._store = store
        self.session: ReviewSession | None = None
        self.view: SlideView | None = None
        self.slide_layer: Image | None = None
        self.selected: int | None = None
        self._build_ui(detector)
        keep_keys_on_the_canvas(self)
        self.setAcceptDrops(True)
        self.counts = CountsController(self.counts_panel, lambda: self.store, self.visible_region, self.current_hpf,
                                       lambda: self.score_threshold, self)
        self.counts.shown.connect(self._outline_fields)
        self.actions = CountsActions(self)
        # while idle, fold the write-ahead log into reviews.sqlite, so a plain copy of the file is current
        self._checkpoint_timer = QTimer(self, interval=int(IDLE_CHECKPOINT_S * 1000), timeout=self._checkpoint_if_idle)
        self._checkpoint_timer.start()
        self.viewer.scene.camera.events.center.connect(lambda _event: self.detection_panel.on_camera())
        self.viewer.scene.camera.events.zoom.connect(lambda _event: self.detection_panel.on_camera())
        self.viewer.layers.events.inserted.connect(self._on_layer_inserted)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self.viewer.mouse_drag_callbacks.append(self._on_mouse)
        self._bind_keys(self.viewer)
        if detector is None:
            self.model_panel.load(None, None, chosen=False)
        else:
            self.model_panel.show_model()
        for layer in list(self.viewer.layers):
            if self._is_slide_layer(layer):
                self.bind_slide(layer)

    # -- UI -------------------------------------------------------------------------------------

    def _build_ui(self, detector) -> None:
        content = QWidget()
        layout = QVBoxLayout(content)
        self.model_panel = ModelPanel(detector)
        self.model_panel.loaded.connect(lambda operating: self.threshold.setValue(round(operating * 100)))
        self.detection_panel = DetectionPanel(self, DEFAULT_THRESHOLD)
        self.runner, self.done_regions = self.detection_panel.runner, self.detection_panel.done_regions
        self.review_box = ReviewBox()
        self.review_box.colour_mode.currentIndexChanged.connect(lambda _: self.rebuild_overlay())
        self.review_box.reviewer_name.editingFinished.connect(lambda: self.set_reviewer(self.reviewer_name.text()))
        self.legend = Legend()
        self.counts_panel = CountsPanel()
        self.cohort_panel = CohortPanel()
        for part in (self.model_panel, self.detection_panel, self.review_box, self.legend, self.counts_panel,
                     self.cohort_panel):
            layout.addWidget(part)
        layout.addStretch(1)
        in_scroll_area(self, content)
        # the parts' controls, under the names scripts and tests use
        panel = self.detection_panel
        self.threshold, self.progress, self.status, self.auto_detect = panel.threshold, panel.progress, panel.status, panel.auto_detect
        self.detect_view_button, self.detect_all_button, self.cancel_button = (
            panel.detect_view_button, panel.detect_all_button, panel.cancel_button)
        self.model_name, self.device_name = self.model_panel.name, self.model_panel.device
        self.load_button, self.load_mmdet_button = self.model_panel.load_button, self.model_panel.load_mmdet_button
        box = self.review_box
        self.colour_mode, self.selection_label, self.review_progress = box.colour_mode, box.selection_label, box.progress
        self.reviewer_name, self.saved_in = box.reviewer_name, box.saved_in
        self.threshold.valueChanged.connect(lambda _value: self.rebuild_overlay())
        self.cohort_panel.refresh_requested.connect(self.list_slides)
        self.cohort_panel.open_requested.connect(self.open_slide_at_hotspot)

    def _bind_keys(self, target) -> None:
        """Review keys on the viewer and on our layers (a layer's own keys would win when it is active)."""
        for key, action in REVIEW_KEYS.items():
            target.bind_key(key, lambda *_, act=action: act(self), overwrite=True)

    def _say(self, text: str) -> None:
        """Why a key or button could not act, in the status line."""
        self.status.setText(text)

    # -- the model, the store and the cohort -------------------------------------------------------

    @property
    def detector(self):
        return self.model_panel.detector

    @detector.setter
    def detector(self, detector) -> None:
        self.model_panel.detector = detector

    @property
    def model_label(self) -> str:
        return self.model_panel.label

    def use_model(self, path: str) -> None:
        """Make the checkpoint at ``path`` the active model (the training panel's "Use this model")."""
        self.model_panel.load(path, None)

    _model_key = _forward("model_panel", ModelPanel.key)

    @property
    def store(self) -> ReviewStore:
        """The review store, opened on first use."""
        if self._store is None:
            self._store = open_default_store()
        return self._store

    @_reports_errors
    def list_slides(self) -> list[dict]:
        """Fill the cohort table: every slide of the store with its counts, busiest hotspot first."""
        rows = cohort_rows(self.store, self.counts_panel.hpf_area.value())
        self.cohort_panel.show_rows(rows)
        return rows

    @_reports_errors
    def open_slide_at_hotspot(self, path: str) -> None:
        """Open a slide of the cohort with our reader and centre the view on its hotspot."""
        if not Path(path).exists():
            notify.show_error(f"{path} is not there any more (moved or on a disk not mounted).")
            return
        self.viewer.open(path, plugin="midog-viewer")
        self.go_to_hotspot()

    # -- slide ----------------------------------------------------------------------------------

    @staticmethod
    def _is_slide_layer(layer) -> bool:
        return isinstance(layer, Image) and layer.metadata.get("slide") is not None

    def _on_layer_inserted(self, event) -> None:
        if self._is_slide_layer(event.value):
            self.bind_slide(event.value)

    def _on_layer_removed(self, event) -> None:
        if event.value is self.slide_layer:
            self._unbind()
            self._say("The image was closed. " + NO_SLIDE)
        elif self.view is not None and self.view.shows_stored(event.value):
            QTimer.singleShot(0, lambda name=event.value.name: self._put_layers_back(name))

    def _put_layers_back(self, name: str) -> None:
        """A layer of ours deleted in napari's layer list: draw the slide's layers again from the store (what
        they show still counts; only a decision changes that), and say so."""
        if self.view is None or self.slide_layer not in self.viewer.layers:
            return
        self.view.remove()
        self.view = self._new_view(self.slide_layer)
        self.rebuild_overlay()
        self._say(f"The layer '{name}' shows the review store, so it was put back: reject a box (R) or undo to "
                  "change what counts.")

    def _unbind(self) -> None:
        """Forget the slide: its run stops, its layers go, the panels show nothing of it."""
        self.runner.abandon()
        self.counts.follow(None)
        if self.view is not None:
            self.view.remove()
        if self.session is not None:
            self.session.events.disconnect_all()
            self.session.close()
        self.view = self.session = self.slide_layer = None
        self.counts_panel.pixel_size_row.setVisible(False)
        self.select(None)

    @_reports_errors
    def bind_slide(self, layer: Image) -> None:
        """Review the slide of an image layer: restore its objects from the store and draw them."""
        self._unbind()
        slide = layer.metadata["slide"]
        self.model_panel.pick_for(slide.path)
        self.session = ReviewSession(self.store, slide.path, width=slide.width, height=slide.height, mpp=slide.mpp,
                                     ground_truth=layer.metadata.get("ground_truth"))
        slide.mpp = slide.mpp or self.session.mpp  # a frame: the pixel size a reviewer recorded for it earlier
        self.counts_panel.show_pixel_size(self.session.mpp)
        self.slide_layer = layer
        self.view = self._new_view(layer)
        self.session.events.objects_changed.connect(lambda _change: self._show_progress())
        self.counts.follow(self.session)
        self.rebuild_overlay()
        self.reviewer_name.setText(self.session.reviewer)
        self.saved_in.setText(f"Reviews are saved as you decide, in {self.store.path}")
        link = self.session.link.message()  # a moved slide found its review; a changed one starts a new one
        self._say(f"Reviewing {Path(slide.path).name} ({len(self.session.table)} objects restored)."
                  + (f" {link[:1].upper()}{link[1:]}." if link else ""))

    def _new_view(self, layer: Image) -> SlideView:
        return SlideView(self.viewer, layer, self.session, lambda: self.score_threshold,
                         lambda: self.colour_mode.currentIndex() == 1, self._bind_keys, self._say)

    @property
    def slide(self):
        return None if self.slide_layer is None else self.slide_layer.metadata["slide"]

    @property
    def overlay(self) -> ReviewOverlay | None:
        """The box layers of the slide (None without one)."""
        return None if self.view is None else self.view.overlay

    def _outline_fields(self, result: dict) -> None:
        """Outline the field the "Current HPF" row counted and the hotspot the score line names (none before
        the slide was analysed: no score is shown then)."""
        if self.hpf_layers is not None and result["session"] is self.session:
            self.hpf_layers.outline(result["hpf_region"], result["score"].hotspot if result["analysed"] else None)

    @property
    def hpf_layers(self) -> HpfLayers | None:
        return None if self.view is None else self.view.hpf_layers

    def visible_region(self) -> tuple[int, int, int, int] | None:
        """The level-0 region on screen (None without a slide)."""
        return None if self.view is None else self.view.visible_region()

    # -- drawing and counts ---------------------------------------------------------------------

    @property
    def score_threshold(self) -> float:
        return self.threshold.value() / 100

    def rebuild_overlay(self) -> None:
        """Redraw every box (slide bound, threshold or colour mode changed, annotations imported)."""
        if self.session is None:
            return
        self.view.painter.rebuild()
        self.overlay.select(self.selected)
        self._show_progress()
        self.schedule_counts()

    schedule_counts = _forward("counts", CountsController.schedule)
    update_counts = _forward("counts", CountsController.update)

    show_hpf_grid = _forward("actions", CountsActions.show_hpf_grid)
    current_hpf = _forward("actions", CountsActions.current_hpf)
    mark_current_hpf = _forward("actions", CountsActions.mark_current_hpf)
    go_to_hotspot = _forward("actions", CountsActions.go_to_hotspot)
    set_pixel_size = _forward("actions", CountsActions.set_pixel_size)
    export = _forward("actions", CountsActions.export)
    import_annotations = _forward("actions", CountsActions.import_annotations)
    _choose_import = _forward("actions", CountsActions.choose_import)  # the File menu's entry

    # -- review ---------------------------------------------------------------------------------

    def set_reviewer(self, name: str) -> None:
        """Record the decisions that follow under ``name`` (kept when blank: every decision needs a who)."""
        name = name.strip()
        if not name:
            self.reviewer_name.setText(self.store.reviewer)
            return
        self.store.reviewer = name
        if self.session is not None:
            self.session.reviewer = name
        self._say(f"Decisions are now stored as made by {name}.")

    def _show_progress(self) -> None:
        self.review_box.show_progress(self.session, self.score_threshold)

    def select(self, key: int | None) -> None:
        """Make one object the target of the review keys."""
        self.selected = key
        self._show_progress()
        if self.overlay is not None:
            self.overlay.select(key)
        self.review_box.show_selection(self.session, key)

    @_reports_errors
    def decide(self, action: str) -> None:
        """Accept, reject or mark as hard negative the selected object (stored before this returns)."""
        if self.session is None:
            self._say(NO_SLIDE)
            return
        if self.selected is None:
            self._say(f"Nothing selected to {action}: click a box, or press Space for the next pending detection.")
            return
        self.session.decide(self.selected, action)
        self.select(self.selected)

    @_reports_errors
    def toggle_atypical(self) -> None:
        """T: mark the selected mitotic figure atypical, or normal again (a logged decision; Ctrl+Z undoes it)."""
        if self.session is None:
            self._say(NO_SLIDE)
            return
        if self.selected is None:
            self._say("Nothing selected to mark atypical or normal: click a box, or press Space for the next "
                      "pending detection.")
            return
        self.session.toggle_atypical(self.selected)
        self.select(self.selected)
        now = self.session.table.atypical[self.session.row_of(self.selected)] == 1
        self._say(f"Marked {'atypical' if now else 'normal'} (Ctrl+Z undoes).")

    @_reports_errors
    def undo(self) -> None:
        """Undo this reviewer's latest decision on the slide."""
        self._undo_redo("undo")

    @_reports_errors
    def redo(self) -> None:
        """Redo this reviewer's latest undone decision on the slide."""
        self._undo_redo("redo")

    def _undo_redo(self, action: str) -> None:
        if self.session is None:
            self._say(NO_SLIDE)
            return
        changed = self.session.undo() if action == "undo" else self.session.redo()
        if not changed:
            self._say(self.session.nothing_to(action))
            return
        self.select(changed[0])

    def step(self, forward: bool = True) -> None:
        """Select the next (or previous) pending mitotic-figure prediction and bring it on screen."""
        if self.session is None:
            self._say(NO_SLIDE)
            return
        t = self.session.table
        candidates = self.session.pending_mask(self.score_threshold)
        current = None if self.selected is None else self.session.row_of(self.selected)
        row = step_in_order(reading_order(t.boxes), candidates, current, forward)
        if row is None:
            self._say("No pending detections left.")
            return
        self.select(int(self.session.keys[row]))
        self.view.centre_on(t.boxes[row])

    @_reports_errors
    def add_mitosis_at(self, x: float, y: float) -> None:
        """Add a missed mitosis centred on level-0 ``(x, y)``."""
        if self.session is None:
            self._say(NO_SLIDE)
            return
        self.select(self.session.add_mitosis(x, y))

    def _on_mouse(self, viewer, event):
        """Click selects the box under the cursor; Shift+click adds a missed mitosis. Drags pan as usual."""
        if self.session is None or event.button != 1:
            return
        dragged = False
        yield
        while event.type == "mouse_move":
            dragged = True
            yield
        if dragged:  # a drag pans, as napari does
            return
        self.click_at(*self.view.to_level0(event.position), add="Shift" in event.modifiers)

    def click_at(self, x: float, y: float, add: bool = False) -> None:
        """A click at level-0 ``(x, y)``: select the box there (or nothing), or with ``add`` add a mitosis."""
        if add:
            self.add_mitosis_at(x, y)
            return
        if self.session is None:
            self._say(NO_SLIDE)
            return
        rows = np.flatnonzero(self.session.visible_mask(self.score_threshold))
        hit = box_at(self.session.table.boxes[rows], x, y)
        self.select(None if hit is None else int(self.session.keys[rows[hit]]))

    # -- detection (the Detection box runs it) ----------------------------------------------------

    @property
    def worker(self):
        """The running detection worker (None when idle)."""
        return self.runner.worker

    is_running = _forward("runner", DetectionRunner.is_running)
    cancel_detection = _forward("runner", DetectionRunner.cancel)
    detect_visible = _forward("detection_panel", DetectionPanel.detect_visible)
    detect_whole = _forward("detection_panel", DetectionPanel.detect_whole)
    detect_region = _forward("detection_panel", DetectionPanel.detect_region)
    use_atypical_model = _forward("detection_panel", DetectionPanel.use_atypical_model)

    def dragEnterEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        for url in event.mimeData().urls():
            if url.isLocalFile():
                self.import_annotations(url.toLocalFile())

    # -- closing --------------------------------------------------------------------------------

    @_reports_errors
    def _checkpoint_if_idle(self) -> None:
        if self.session is not None:
            self.session.checkpoint_if_idle()

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        """Stop timers and any detection, so nothing touches the store after the dock is gone."""
        self.detection_panel.settle.stop()
        self._checkpoint_timer.stop()
        self.cancel_detection()
        QThreadPool.globalInstance().waitForDone(10_000)  # workers finish before their widget goes
        if self.session is not None:
            self.session.close()
        self.counts.close()
        super().closeEvent(event)
