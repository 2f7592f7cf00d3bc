"""The "Mitosis review" dock: detect what is on screen, judge each box with one key, count and export.

A thin skin: detection is :class:`~midog_viewer.detect.engine.Detector` run in a superqt ``thread_worker``
(napari's wrapper of it fails on a worker error in napari 0.9.2: its status callback takes the wrong arguments)
(batches drawn as they come), decisions and figures are :class:`~midog_viewer._qt.review_session.ReviewSession`
(each decision committed to the review store before the key handler returns), and the boxes are the
:class:`~midog_viewer._qt.overlay.ReviewOverlay` Points layers. The slide is the image layer whose
``metadata["slide"]`` holds a :class:`~midog_viewer.io.Slide` (what our reader and sample put there).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from napari.layers import Image, Shapes
from qtpy.QtCore import Qt, QThreadPool, QTimer
from qtpy.QtWidgets import (
    QAbstractButton,
    QAbstractSlider,
    QCheckBox,
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from midog_viewer._qt import notify
from midog_viewer._qt.cohort_panel import CohortPanel
from midog_viewer._qt.counts_panel import CountsPanel
from midog_viewer._qt.overlay import ReviewOverlay
from midog_viewer._qt.notify import NO_SLIDE
from midog_viewer._qt.notify import reports_errors as _reports_errors
from midog_viewer._qt.overlay_model import DoneRegions, box_at, reading_order, step_in_order, view_region
from midog_viewer._qt.review_detection import DETECTION_FLOOR, ModelAndDetection, rgba_for
from midog_viewer._qt.review_fields import FieldsAndFiles
from midog_viewer._qt.review_session import IDLE_CHECKPOINT_S, ReviewSession, open_default_store
from midog_viewer.classes import MITOTIC_FIGURE
from midog_viewer.review.cohort import cohort_rows
from midog_viewer.review.status import Status
from midog_viewer.review.store import ReviewStore

DEFAULT_THRESHOLD = 0.5
#: Quiet time after the last pan or zoom before "auto-detect" analyses the view (ms).
SETTLE_MS = 400
#: Time after a decision before the counts are recomputed, so the key press itself stays instant (ms).
COUNTS_DELAY_MS = 150
KEY_HELP = (
    "<b>Keys</b> (canvas focused): <b>A</b> accept · <b>R</b> reject · <b>H</b> hard negative · "
    "<b>Space</b>/<b>N</b> next pending · <b>P</b> previous · <b>Ctrl+Z</b> undo · <b>Ctrl+Shift+Z</b> redo · "
    "<b>Esc</b> cancel detection. <b>Click</b> a box to select it; <b>Shift+click</b> adds a missed mitosis."
)


class ReviewWidget(ModelAndDetection, FieldsAndFiles, QWidget):
    """Dock widget of the review workflow (contributed to napari as "Mitosis review").

    ``detector`` and ``store`` default to the built-in demo model and the per-user review database
    (:func:`~midog_viewer._qt.review_session.default_db_path`); tests pass their own.
    """

    def __init__(self, napari_viewer, detector=None, store: ReviewStore | None = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.detector = detector
        self.model_label = "stand-in" if detector is not None else ""
        self._store = store
        self.session: ReviewSession | None = None
        self.overlay: ReviewOverlay | None = None
        self.slide_layer: Image | None = None
        self.selected: int | None = None
        self.done_regions = DoneRegions()
        self.worker = None
        self._cancel: threading.Event | None = None
        self._running_region: tuple[int, int, int, int] | None = None
        self._run_id: int | None = None
        self._grid_layer: Shapes | None = None
        self._fields_layer: Shapes | None = None
        self._counts_worker = None
        self._counts_stale = False
        self._reader_store: ReviewStore | None = None
        self._build_ui()
        self._keep_keys_on_the_canvas()
        self.setAcceptDrops(True)

        self._settle = QTimer(self, singleShot=True, interval=SETTLE_MS, timeout=self._on_view_settled)
        self._counts_timer = QTimer(self, singleShot=True, interval=COUNTS_DELAY_MS, timeout=self.update_counts)
        # while idle, fold the write-ahead log into reviews.sqlite, so a plain copy of the file is current
        self._checkpoint_timer = QTimer(self, interval=int(IDLE_CHECKPOINT_S * 1000), timeout=self._checkpoint_if_idle)
        self._checkpoint_timer.start()
        self.viewer.scene.camera.events.center.connect(self._on_camera)
        self.viewer.scene.camera.events.zoom.connect(self._on_camera)
        self.viewer.layers.events.inserted.connect(self._on_layer_inserted)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self.viewer.mouse_drag_callbacks.append(self._on_mouse)
        self._bind_keys(self.viewer)
        # A model the user picked stays; otherwise each slide gets the shipped model made for it.
        self._model_chosen = detector is not None
        self._synthetic_warned: set[tuple[str, str]] = set()
        if detector is None:
            self._load_model(None, None, chosen=False)
        else:
            self._show_model()
        for layer in list(self.viewer.layers):
            if self._is_slide_layer(layer):
                self.bind_slide(layer)

    # -- UI -------------------------------------------------------------------------------------

    def _build_ui(self) -> None:
        layout = QVBoxLayout(self)
        model_box = QGroupBox("Model")
        model_layout = QVBoxLayout(model_box)
        self.model_name = QLabel("–")
        self.model_name.setWordWrap(True)
        self.device_name = QLabel("Device: –")
        model_layout.addWidget(self.model_name)
        model_layout.addWidget(self.device_name)
        load_row = QHBoxLayout()
        self.load_button = QPushButton("Load checkpoint…")
        self.load_button.clicked.connect(self._choose_checkpoint)
        self.load_mmdet_button = QPushButton("Load mmdet…")
        self.load_mmdet_button.clicked.connect(self._choose_mmdet)
        load_row.addWidget(self.load_button)
        load_row.addWidget(self.load_mmdet_button)
        model_layout.addLayout(load_row)
        layout.addWidget(model_box)

        detect_box = QGroupBox("Detection")
        detect_layout = QVBoxLayout(detect_box)
        threshold_row = QHBoxLayout()
        threshold_row.addWidget(QLabel("Score threshold"))
        self.threshold = QSlider(Qt.Horizontal)
        self.threshold.setRange(int(DETECTION_FLOOR * 100), 100)
        self.threshold.setValue(int(DEFAULT_THRESHOLD * 100))
        self.threshold_label = QLabel(f"{DEFAULT_THRESHOLD:.2f}")
        self.threshold.valueChanged.connect(lambda v: self.threshold_label.setText(f"{v / 100:.2f}"))
        self.threshold.valueChanged.connect(self._on_threshold)
        threshold_row.addWidget(self.threshold)
        threshold_row.addWidget(self.threshold_label)
        detect_layout.addLayout(threshold_row)
        buttons = QHBoxLayout()
        self.detect_view_button = QPushButton("Detect visible region")
        self.detect_view_button.clicked.connect(lambda: self.detect_visible())
        self.detect_all_button = QPushButton("Detect whole image")
        self.detect_all_button.clicked.connect(lambda: self.detect_whole())
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel_detection)
        buttons.addWidget(self.detect_view_button)
        buttons.addWidget(self.detect_all_button)
        buttons.addWidget(self.cancel_button)
        detect_layout.addLayout(buttons)
        self.auto_detect = QCheckBox("Auto-detect when the view settles")
        detect_layout.addWidget(self.auto_detect)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        detect_layout.addWidget(self.progress)
        self.status = QLabel("Open a slide or the synthetic sample to start.")
        self.status.setWordWrap(True)
        detect_layout.addWidget(self.status)
        layout.addWidget(detect_box)

        review_box = QGroupBox("Review")
        review_layout = QVBoxLayout(review_box)
        colour_row = QHBoxLayout()
        colour_row.addWidget(QLabel("Colour by"))
        self.colour_mode = QComboBox()
        self.colour_mode.addItems(["review", "ground truth (TP yellow, FP red)"])
        self.colour_mode.currentIndexChanged.connect(lambda _: self.rebuild_overlay())
        colour_row.addWidget(self.colour_mode)
        review_layout.addLayout(colour_row)
        keys = QLabel(KEY_HELP)
        keys.setWordWrap(True)
        review_layout.addWidget(keys)
        self.selection_label = QLabel("Nothing selected.")
        review_layout.addWidget(self.selection_label)
        self.review_progress = QLabel("")
        review_layout.addWidget(self.review_progress)
        reviewer_row = QHBoxLayout()
        reviewer_row.addWidget(QLabel("Reviewer"))
        self.reviewer_name = QLineEdit()
        self.reviewer_name.setToolTip("Every decision is stored with this name; Ctrl+Z undoes only this reviewer's.")
        self.reviewer_name.editingFinished.connect(lambda: self.set_reviewer(self.reviewer_name.text()))
        reviewer_row.addWidget(self.reviewer_name)
        review_layout.addLayout(reviewer_row)
        self.saved_in = QLabel("")
        self.saved_in.setWordWrap(True)
        review_layout.addWidget(self.saved_in)
        layout.addWidget(review_box)

        self.counts_panel = CountsPanel()
        self.counts_panel.export_requested.connect(self._choose_export)
        self.counts_panel.import_requested.connect(self._choose_import)
        self.counts_panel.hotspot_requested.connect(self.go_to_hotspot)
        self.counts_panel.mark_hpf_requested.connect(self.mark_current_hpf)
        self.counts_panel.grid_toggled.connect(self.show_hpf_grid)
        self.counts_panel.hpf_area_changed.connect(lambda _: self._on_hpf_area())
        layout.addWidget(self.counts_panel)
        self.cohort_panel = CohortPanel()
        self.cohort_panel.refresh_requested.connect(self.list_slides)
        self.cohort_panel.open_requested.connect(self.open_slide_at_hotspot)
        layout.addWidget(self.cohort_panel)
        layout.addStretch(1)

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

    def _keep_keys_on_the_canvas(self) -> None:
        """No dock control takes keyboard focus: Space, A, R, H… always reach the canvas, whatever was clicked
        (a focused button would be pressed again by every Space)."""
        for control in self.findChildren(QAbstractButton) + self.findChildren(QAbstractSlider) + self.findChildren(QComboBox):
            control.setFocusPolicy(Qt.NoFocus)

    def _say(self, text: str) -> None:
        """Why a key or button could not act, in the status line."""
        self.status.setText(text)

    def _bind_keys(self, target) -> None:
        """Review keys on the viewer and on our layers (a layer's own keys would win when it is active)."""
        bindings = {
            "a": lambda *_: self.decide("accept"),
            "r": lambda *_: self.decide("reject"),
            "h": lambda *_: self.decide("hard negative"),
            "n": lambda *_: self.step(forward=True),
            "Space": lambda *_: self.step(forward=True),
            "p": lambda *_: self.step(forward=False),
            "Control-Z": lambda *_: self.undo(),
            "Control-Shift-Z": lambda *_: self.redo(),
            "Escape": lambda *_: self.cancel_detection(),
        }
        for key, action in bindings.items():
            target.bind_key(key, action, overwrite=True)

    # -- model ----------------------------------------------------------------------------------

    @property
    def store(self) -> ReviewStore:
        """The review store, opened on first use."""
        if self._store is None:
            self._store = open_default_store()
        return self._store

    # -- slide ----------------------------------------------------------------------------------

    @staticmethod
    def _is_slide_layer(layer) -> bool:
        return isinstance(layer, Image) and layer.metadata.get("slide") is not None

    def _on_layer_inserted(self, event) -> None:
        if self._is_slide_layer(event.value):
            self.bind_slide(event.value)

    def _on_layer_removed(self, event) -> None:
        if event.value is self.slide_layer:
            self.cancel_detection()
            self._unbind()

    def _unbind(self) -> None:
        if self.session is not None:
            self.session.close()
        if self.overlay is not None:
            self.overlay.remove()
        for layer in (self._grid_layer, self._fields_layer):
            if layer is not None and layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self.overlay = self.session = self.slide_layer = self.selected = None
        self._grid_layer = self._fields_layer = None

    @_reports_errors
    def bind_slide(self, layer: Image) -> None:
        """Review the slide of an image layer: restore its objects from the store and draw them."""
        self.cancel_detection()
        self._unbind()
        slide = layer.metadata["slide"]
        self.slide_layer = layer
        self._pick_model_for(slide.path)
        self.session = ReviewSession(
            self.store, slide.path, width=slide.width, height=slide.height, mpp=slide.mpp,
            ground_truth=layer.metadata.get("ground_truth"),
        )
        self.overlay = ReviewOverlay(self.viewer, Path(slide.path).stem, **self._placement())
        for layer in [box_layer.layer for box_layer in self.overlay.box_layers()] + [self.overlay.selection]:
            self._bind_keys(layer)
        self.rebuild_overlay()
        self._show_fields()
        self.reviewer_name.setText(self.session.reviewer)
        self.saved_in.setText(f"Reviews are saved as you decide, in {self.store.path}")
        self.status.setText(f"Reviewing {Path(slide.path).name} ({len(self.session.table)} objects restored).")

    @property
    def slide(self):
        return None if self.slide_layer is None else self.slide_layer.metadata["slide"]

    # -- geometry -------------------------------------------------------------------------------

    def visible_region(self) -> tuple[int, int, int, int] | None:
        """The level-0 region on screen, from the camera, the canvas size and the slide layer's scale."""
        if self.slide_layer is None:
            return None
        canvas = tuple(self.viewer.canvas.size)
        return view_region(
            self.viewer.scene.camera.center, self.viewer.scene.camera.zoom, canvas,
            tuple(self.slide_layer.scale[-2:]), (self.slide.width, self.slide.height),
            tuple(self.slide_layer.translate[-2:]),
        )

    def _world_to_level0(self, position) -> tuple[float, float]:
        row, col = self.slide_layer.world_to_data(position)[-2:]
        return float(col), float(row)

    def _centre_on(self, box: np.ndarray) -> None:
        """Centre the camera on a level-0 box, zooming in to at least one screen pixel per level-0 pixel."""
        centre = ((box[1] + box[3]) / 2, (box[0] + box[2]) / 2)
        world = self.slide_layer.data_to_world(centre)
        self.viewer.scene.camera.center = tuple(world[-2:])
        level0_zoom = 1.0 / float(self.slide_layer.scale[-1])
        if self.viewer.scene.camera.zoom < level0_zoom:
            self.viewer.scene.camera.zoom = level0_zoom

    # -- drawing --------------------------------------------------------------------------------

    @property
    def score_threshold(self) -> float:
        return self.threshold.value() / 100

    def _evaluation_colours(self) -> bool:
        return self.colour_mode.currentIndex() == 1 and self.session is not None and self.session.has_ground_truth()

    def _statuses(self) -> np.ndarray:
        """The status each row is drawn with: review status, or evaluation status in evaluation mode."""
        statuses = self.session.table.status.copy()
        if self._evaluation_colours():
            _, evaluated = self.session.evaluation(self.score_threshold)
            for row, key in enumerate(self.session.keys.tolist()):
                statuses[row] = evaluated.get(key, statuses[row])
        return statuses

    def rebuild_overlay(self) -> None:
        """Redraw every box (slide bound, threshold or colour mode changed, annotations imported)."""
        if self.session is None:
            return
        self._show_progress()
        t = self.session.table
        statuses = self._statuses()
        shown = self.session.visible_mask(self.score_threshold)
        hard_negative = self.session.is_hard_negative_prediction()
        annotation = t.kind != "detection"
        parts = (
            (self.overlay.predictions, shown & ~hard_negative & ~annotation),
            (self.overlay.hard_negatives, shown & hard_negative),
        )
        if annotation.any():
            ground_truth = self.overlay.ensure_ground_truth()
            self._bind_keys(ground_truth.layer)
            parts += ((ground_truth, annotation & shown),)
        for box_layer, mask in parts:
            box_layer.set_boxes(
                self.session.keys[mask], t.boxes[mask], np.array([rgba_for(s) for s in statuses[mask]]).reshape(-1, 4),
                t.score[mask], list(t.label[mask]), list(statuses[mask]),
            )
        self.overlay.select(self.selected)
        self.schedule_counts()

    def _recolour(self, keys: list[int]) -> None:
        if self._evaluation_colours():
            self.rebuild_overlay()
            return
        rows = [self.session.row_of(k) for k in keys]
        statuses = [self.session.table.status[r] for r in rows]
        missing = [k for k in keys if self.overlay.layer_of(k) is None]
        if missing:  # e.g. an undo brought back a box the threshold had hidden
            self.rebuild_overlay()
            return
        self.overlay.recolour(keys, np.array([rgba_for(s) for s in statuses]), statuses)
        self.schedule_counts()

    def _on_threshold(self, _value: int) -> None:
        self.rebuild_overlay()
        self.schedule_counts()

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
        """"k of N reviewed": mitotic-figure predictions on show (at the threshold) that have a verdict."""
        if self.session is None:
            self.review_progress.setText("")
            return
        t = self.session.table
        shown = (t.kind == "detection") & (t.label == MITOTIC_FIGURE) & self.session.visible_mask(self.score_threshold)
        reviewed = shown & (t.status != Status.PENDING.value)
        self.review_progress.setText(
            f"Reviewed {int(reviewed.sum())} of {int(shown.sum())} detections at score ≥ {self.score_threshold:.2f}."
        )

    def select(self, key: int | None) -> None:
        """Make one object the target of the review keys."""
        self.selected = key
        self._show_progress()
        if self.overlay is not None:
            self.overlay.select(key)
        if key is None or self.session is None:
            self.selection_label.setText("Nothing selected.")
            return
        row = self.session.row_of(key)
        t = self.session.table
        score = "" if np.isnan(t.score[row]) else f", score {t.score[row]:.2f}"
        self.selection_label.setText(f"Selected: {t.label[row]} ({t.status[row]}{score})")

    @_reports_errors
    def decide(self, action: str) -> None:
        """Accept, reject or mark as hard negative the selected object (stored before this returns)."""
        if self.session is None:
            self._say(NO_SLIDE)
            return
        if self.selected is None:
            self._say(f"Nothing selected to {action}: click a box, or press Space for the next pending detection.")
            return
        changed = self.session.decide(self.selected, action)
        self._recolour(changed)
        self.select(self.selected)

    @_reports_errors
    def undo(self) -> None:
        if self.session is None:
            self._say(NO_SLIDE)
            return
        changed = self.session.undo()
        if not changed:
            self._say(self.session.nothing_to("undo"))
            return
        self._recolour(changed)
        self.select(changed[0])

    @_reports_errors
    def redo(self) -> None:
        if self.session is None:
            self._say(NO_SLIDE)
            return
        changed = self.session.redo()
        if not changed:
            self._say(self.session.nothing_to("redo"))
            return
        self._recolour(changed)
        self.select(changed[0])

    def step(self, forward: bool = True) -> None:
        """Select the next (or previous) pending mitotic-figure prediction and bring it on screen."""
        if self.session is None:
            self._say(NO_SLIDE)
            return
        t = self.session.table
        candidates = (
            (t.kind == "detection") & (t.status == Status.PENDING.value) & (t.label == MITOTIC_FIGURE)
            & self.session.visible_mask(self.score_threshold)
        )
        current = None if self.selected is None else self.session.row_of(self.selected)
        row = step_in_order(reading_order(t.boxes), candidates, current, forward)
        if row is None:
            self.status.setText("No pending detections left.")
            return
        self.select(int(self.session.keys[row]))
        self._centre_on(t.boxes[row])

    @_reports_errors
    def add_mitosis_at(self, x: float, y: float) -> None:
        """Add a missed mitosis centred on level-0 ``(x, y)``."""
        if self.session is None:
            return
        key = self.session.add_mitosis(x, y)
        self.rebuild_overlay()
        self.select(key)

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
        x, y = self._world_to_level0(event.position)
        self.click_at(x, y, add="Shift" in event.modifiers)

    def click_at(self, x: float, y: float, add: bool = False) -> None:
        """A click at level-0 ``(x, y)``: select the box there (or nothing), or with ``add`` add a mitosis."""
        if add:
            self.add_mitosis_at(x, y)
            return
        rows = np.flatnonzero(self.session.visible_mask(self.score_threshold))
        hit = box_at(self.session.table.boxes[rows], x, y)
        self.select(None if hit is None else int(self.session.keys[rows[hit]]))

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        """Stop timers and any detection, so nothing touches the store after the dock is gone."""
        self._settle.stop()
        self._counts_timer.stop()
        self._checkpoint_timer.stop()
        self.cancel_detection()
        QThreadPool.globalInstance().waitForDone(10_000)  # workers finish before their widget goes
        if self.session is not None:
            self.session.close()
        if self._reader_store is not None:
            self._reader_store.close()
            self._reader_store = None
        super().closeEvent(event)

    @_reports_errors
    def _checkpoint_if_idle(self) -> None:
        if self.session is not None:
            self.session.checkpoint_if_idle()

    def dragEnterEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        for url in event.mimeData().urls():
            if url.isLocalFile():
                self.import_annotations(url.toLocalFile())
