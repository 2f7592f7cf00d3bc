"""The "Mitosis review" dock: detect what is on screen, judge each box with one key, count and export.

A thin skin: detection is :class:`~midog_viewer.detect.engine.Detector` run in a superqt ``thread_worker``
(napari's wrapper of it fails on a worker error in napari 0.9.2: its status callback takes the wrong arguments)
(batches drawn as they come), decisions and figures are :class:`~midog_viewer._qt.review_session.ReviewSession`
(each decision committed to the review store before the key handler returns), and the boxes are the
:class:`~midog_viewer._qt.overlay.ReviewOverlay` Points layers. The slide is the image layer whose
``metadata["slide"]`` holds a :class:`~midog_viewer.io.Slide` (what our reader and sample put there).
"""

from __future__ import annotations

import functools
import sys
import threading
from pathlib import Path

import numpy as np
from napari.layers import Image, Shapes
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt, QThreadPool, QTimer
from qtpy.QtWidgets import (
    QAbstractButton,
    QAbstractSlider,
    QCheckBox,
    QComboBox,
    QFileDialog,
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
from superqt.utils import thread_worker

from midog_viewer._qt.cohort_panel import CohortPanel
from midog_viewer._qt.counts_panel import CountsPanel
from midog_viewer._qt.overlay import ReviewOverlay
from midog_viewer._qt.overlay_model import DoneRegions, box_at, reading_order, step_in_order, view_region
from midog_viewer._qt.review_session import IDLE_CHECKPOINT_S, ReviewSession, open_default_store
from midog_viewer.classes import MITOTIC_FIGURE
from midog_viewer.errors import MidogError
from midog_viewer.review.cohort import cohort_rows
from midog_viewer.review.counts import hpf_size_px, write_counts_csv
from midog_viewer.review.status import Status, colour_for
from midog_viewer.review.store import ReviewStore

#: The detector keeps candidates down to this score; the slider only chooses which are drawn and counted.
DETECTION_FLOOR = 0.1
DEFAULT_THRESHOLD = 0.5
#: Quiet time after the last pan or zoom before "auto-detect" analyses the view (ms).
SETTLE_MS = 400
#: Time after a decision before the counts are recomputed, so the key press itself stays instant (ms).
COUNTS_DELAY_MS = 150
_RGBA = {"yellow": (1.0, 1.0, 0.0, 1.0), "white": (1.0, 1.0, 1.0, 1.0), "red": (1.0, 0.0, 0.0, 1.0)}
_HIDDEN = (0.0, 0.0, 0.0, 0.0)
KEY_HELP = (
    "<b>Keys</b> (canvas focused): <b>A</b> accept · <b>R</b> reject · <b>H</b> hard negative · "
    "<b>Space</b>/<b>N</b> next pending · <b>P</b> previous · <b>Ctrl+Z</b> undo · <b>Ctrl+Shift+Z</b> redo · "
    "<b>Esc</b> cancel detection. <b>Click</b> a box to select it; <b>Shift+click</b> adds a missed mitosis."
)


def rgba_for(status: str) -> tuple[float, float, float, float]:
    """Border colour of a status: the review core's colour, transparent for deleted objects."""
    return _HIDDEN if status == Status.DELETED.value else _RGBA[colour_for(status)]


def keep_triton_out() -> None:
    """Make ``import triton`` fail (ImportError) unless it was loaded before napari's OpenGL context.

    torch's CUDA build imports triton lazily (torchvision ops); triton and Mesa's llvmpipe each bring an
    LLVM, and loading triton after the GL context exists crashes the process (``_qt/viewer.py`` loads it
    first on the command-line path). When the dock is opened from a napari started some other way it is
    too late for that, so torch carries on without triton, which eager inference does not need.
    """
    if "triton" not in sys.modules:
        sys.modules["triton"] = None


def _reports_errors(method):
    """Turn bad input (:class:`MidogError`) in a handler into one napari notification."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except MidogError as exc:
            show_error(str(exc))
            return None

    return wrapper


def _bounding_rectangle(vertices: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, w, h) of a shape's (row, column) vertices."""
    (y0, x0), (y1, x1) = np.min(vertices, axis=0)[-2:], np.max(vertices, axis=0)[-2:]
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def _figures(session: ReviewSession, reader: ReviewStore, view, hpf, hpf_mm2: float, threshold: float) -> dict:
    """Everything the counts panel shows, read through ``reader`` (its own connection: in WAL mode it
    never blocks the decisions the GUI thread writes meanwhile). Runs in a worker thread."""

    def totals(region):
        counts = session.counts(region, hpf_mm2, store=reader)
        return {**counts.totals, "pending": session.pending_count(threshold, region)}

    return {
        "session": session,
        "view": None if view is None else totals(view),
        "hpf": None if hpf is None else totals(hpf),
        "image": totals(None),
        # the score uses the HPFs the reviewer marked when there are any, else the hotspot
        "score": session.counts(None, hpf_mm2, use_drawn=True, store=reader),
        "f1": session.evaluation(threshold, view, store=reader)[0] if session.has_ground_truth() else None,
    }


class DetectionFailed(Exception):
    """A detection worker's exception, carried to the GUI thread."""


def _surfacing_errors(batches):
    """Run the detector's generator in the worker, re-raising RuntimeError (what torch raises) as
    :class:`DetectionFailed`: superqt takes a RuntimeError for a deleted worker and only warns, which
    would leave the widget waiting for a run that is over."""
    try:
        yield from batches
    except RuntimeError as exc:
        raise DetectionFailed(str(exc)) from exc


#: What a key or button says when no slide is open.
NO_SLIDE = "Open a slide or the synthetic sample first (File ▸ Open, or File ▸ Open Sample ▸ midog-viewer)."


class ReviewWidget(QWidget):
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
            show_error(f"{path} is not there any more (moved or on a disk not mounted).")
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

    @_reports_errors
    def _load_model(self, path: str | None, mmdet_config: str | None, chosen: bool = True) -> None:
        keep_triton_out()
        from midog_viewer.detect.engine import Detector

        self.detector = Detector(path, score_thr=DETECTION_FLOOR, mmdet_config=mmdet_config)
        self._model_chosen = chosen
        self.model_label = str(self.detector.info.path)
        # Start from the model's operating point (chosen on validation when it was trained here).
        operating = min(max(self.detector.info.config.score_threshold, DETECTION_FLOOR), 1.0)
        self.threshold.setValue(round(operating * 100))
        self._show_model()

    def use_model(self, path: str) -> None:
        """Make the checkpoint at ``path`` the active model (the training panel's "Use this model")."""
        self._load_model(path, None)

    def _show_model(self) -> None:
        name = Path(self.model_label).name if self.detector is not None else "no model loaded"
        tissue = getattr(self.detector, "tissue", None)
        self.model_name.setText(f"Model: {name}" + (f"\nTrained on {tissue.tissue}" if tissue is not None else ""))
        self.model_name.setToolTip(self.model_label)
        device = getattr(self.detector, "device_name", "–") if self.detector is not None else "–"
        self.device_name.setText(f"Device: {device}")

    def _choose_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load a midog-viewer checkpoint", "", "Checkpoints (*.safetensors *.pt *.pth)")
        if path:
            self._load_model(path, None)

    def _choose_mmdet(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load an MMDetection checkpoint", "", "mmdet checkpoints (*.pth)")
        if not path:
            return
        config, _ = QFileDialog.getOpenFileName(self, "Its MMDetection config", "", "Python config (*.py)")
        if config:
            self._load_model(path, config)

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

    def _pick_model_for(self, path) -> None:
        """Unless the user chose a model, load the shipped one made for this image (real tissue or the sample)."""
        if self._model_chosen:
            return
        from midog_viewer.detect.models import default_model_for

        wanted = default_model_for(path).path
        if self.detector is None or Path(self.detector.info.path) != wanted:
            self._load_model(str(wanted), None, chosen=False)

    def _warn_if_synthetic_model(self) -> None:
        """Once per model and slide: a model that learnt synthetic fields only finds nothing real on real tissue."""
        from midog_viewer.detect.models import is_synthetic_image

        tissue = getattr(self.detector, "tissue", None)
        if tissue is None or not tissue.synthetic or is_synthetic_image(self.slide.path):
            return
        key = (self.model_label, str(self.slide.path))
        if key not in self._synthetic_warned:
            self._synthetic_warned.add(key)
            show_warning(f"{tissue.name} learnt {tissue.tissue}: on this real slide its boxes are not mitoses. "
                         "Load a model trained on real tissue.")

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

    # -- detection ------------------------------------------------------------------------------

    def _model_key(self) -> str:
        return f"{self.model_label}|stain={getattr(self.detector, 'stain_normalize', None)}"

    def detect_visible(self, wait: bool = False) -> None:
        """Analyse the part of the view not yet analysed by this model."""
        region = self.visible_region()
        if region is None:
            show_info(NO_SLIDE)
            return
        self.detect_region(self.done_regions.missing(self._model_key(), region, (self.slide.width, self.slide.height)),
                           wait=wait)

    def detect_whole(self, wait: bool = False) -> None:
        """Analyse the whole image (with progress; Cancel or Esc stops it)."""
        if self.slide is None:
            show_info(NO_SLIDE)
            return
        self.detect_region((0, 0, self.slide.width, self.slide.height), wait=wait, tissue_only=True)

    @_reports_errors
    def detect_region(
        self, region: tuple[int, int, int, int] | None, wait: bool = False, tissue_only: bool = False
    ) -> None:
        """Run the detector on a level-0 region; batches are stored and drawn as they come.

        ``wait=True`` runs in the calling thread (scripts, tests); otherwise a napari thread worker.
        ``tissue_only`` (the whole image) searches only tiles that hold tissue and records the tissue fraction.
        """
        if self.session is None or region is None:
            return
        if self.detector is None:
            show_error("No detection model is loaded; load a checkpoint first.")
            return
        self.cancel_detection()
        self._warn_if_synthetic_model()
        zoom_for = getattr(self.detector, "zoom_for", None)
        zoom = zoom_for(self.slide) if zoom_for is not None else 1.0
        tissue_fraction, tile_filter = None, None
        if tissue_only:
            from midog_viewer.detect.tissue import detect_tissue, tissue_filter

            tissue = detect_tissue(self.slide)
            tissue_fraction, tile_filter = tissue.fraction, tissue_filter(tissue)
        self._run_id = self.session.start_run(
            self.model_label, {"region": list(map(int, region)), "score_thr": DETECTION_FLOOR,
                               "operating_thr": self.score_threshold,
                               "stain_normalize": getattr(self.detector, "stain_normalize", None),
                               "resample_zoom": zoom, "tissue_fraction": tissue_fraction},
        )
        self._cancel = threading.Event()
        self._running_region = region
        resampled = "" if zoom == 1.0 else f" (tiles resampled x{zoom:.2f} to the model's {self.detector.model_mpp:.2f} µm/px)"
        searched = "" if tissue_fraction is None else f", tissue {tissue_fraction:.0%} of the image"
        self._set_running(True, f"Detecting in {region[2]}×{region[3]} px{resampled}{searched}…")
        batches = self.detector.iter_detect(self.slide, region, cancel=self._cancel, tile_filter=tile_filter)
        if wait:
            try:
                for progress in batches:
                    self._on_batch(progress)
            except MidogError:
                self._set_running(False, "Detection failed.")
                raise
            self._on_finished()
            return
        self.worker = thread_worker(_surfacing_errors, start_thread=False, ignore_errors=True)(batches)
        self.worker.yielded.connect(self._on_batch)
        self.worker.errored.connect(self._on_worker_error)
        self.worker.finished.connect(self._on_finished)
        self.worker.start()

    def _on_batch(self, progress) -> None:
        found = progress.detections
        keys = self.session.add_detections(self._run_id, found.boxes, found.scores, found.label_names())
        if len(keys):
            self._append(keys)
        self.progress.setRange(0, max(1, progress.total))
        self.progress.setValue(progress.done)

    def _append(self, keys: np.ndarray) -> None:
        rows = np.array([self.session.row_of(k) for k in keys])
        t = self.session.table.select(rows)
        shown = self.session.visible_mask(self.score_threshold)[rows]
        hard_negative = self.session.is_hard_negative_prediction()[rows]
        for box_layer, mask in ((self.overlay.predictions, shown & ~hard_negative),
                                (self.overlay.hard_negatives, shown & hard_negative)):
            if mask.any():
                box_layer.append_boxes(keys[mask], t.boxes[mask], np.array([rgba_for(s) for s in t.status[mask]]),
                                       t.score[mask], list(t.label[mask]), list(t.status[mask]))
        self.schedule_counts()

    def _on_finished(self) -> None:
        cancelled = self._cancel is not None and self._cancel.is_set()
        if not cancelled and self._running_region is not None and self.slide is not None:
            self.done_regions.mark_done(self._model_key(), self._running_region, (self.slide.width, self.slide.height))
        if self._evaluation_colours():
            self.rebuild_overlay()
        self._set_running(False, "Detection cancelled." if cancelled else "Detection done.")
        self._show_progress()
        self.worker = None
        self._running_region = None

    def _on_worker_error(self, exc: Exception) -> None:
        message = str(exc) if isinstance(exc, MidogError) else f"detection failed: {exc}"
        show_error(message)
        self._set_running(False, "Detection failed.")
        self.worker = None

    def _set_running(self, running: bool, message: str) -> None:
        self.detect_view_button.setEnabled(not running)
        self.detect_all_button.setEnabled(not running)
        self.load_button.setEnabled(not running)
        self.load_mmdet_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        if running:
            self.progress.setRange(0, 0)  # busy until the first batch says how many tiles
        self.status.setText(message)

    def cancel_detection(self) -> None:
        """Stop a running detection after its current batch."""
        if self._cancel is not None:
            self._cancel.set()
        if self.worker is not None:
            self.worker.quit()

    def is_running(self) -> bool:
        return self.worker is not None

    def _on_camera(self, _event=None) -> None:
        if self.session is None:
            return
        self._settle.start()
        if self._running_region is not None and self.worker is not None:
            view = self.visible_region()
            x, y, w, h = self._running_region
            if view is None or view[0] >= x + w or view[1] >= y + h or view[0] + view[2] <= x or view[1] + view[3] <= y:
                self.cancel_detection()  # moved away: the rest of that region is not wanted now

    def _on_view_settled(self) -> None:
        self.schedule_counts()
        if self.auto_detect.isChecked() and self.worker is None:
            self.detect_visible()

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

    # -- counts, HPFs, export, import -----------------------------------------------------------

    def schedule_counts(self) -> None:
        self._counts_timer.start()

    def current_hpf(self) -> tuple[float, float, float, float] | None:
        """The HPF-sized field centred on the view centre (level-0 px)."""
        if self.session is None or not self.session.mpp:
            return None
        w, h = hpf_size_px(self.counts_panel.hpf_area.value(), self.session.mpp)
        view = self.visible_region()
        if view is None:
            return None
        cx, cy = view[0] + view[2] / 2, view[1] + view[3] / 2
        return (cx - w / 2, cy - h / 2, w, h)

    def update_counts(self, wait: bool = False) -> None:
        """Recompute the counts rows, the mitotic score and the live F1 (on a timer after changes).

        The figures are read from the store in a worker thread (counting 100,000 objects takes a second),
        so the keys stay instant; ``wait=True`` computes them in the calling thread.
        """
        if self.session is None:
            return
        if not self.session.mpp:
            for row in ("view", "hpf", "image"):
                self.counts_panel.show_counts(row, None)
            self.counts_panel.show_score(None, "(the slide has no pixel size, so HPFs have no size)")
            return
        if self._counts_worker is not None:  # one at a time; count again when it is done
            self._counts_stale = True
            if not wait:
                return
        # A worker reads through its own connection; counting here uses the main one (a worker may be in flight).
        reader = self.store if wait else self._reader()
        request = (self.session, reader, self.visible_region(), self.current_hpf(), self.counts_panel.hpf_area.value(),
                   self.score_threshold)
        if wait:
            self._show_figures(_figures(*request))
            return
        self._counts_stale = False
        self._counts_worker = thread_worker(_figures, start_thread=False, ignore_errors=True)(*request)
        self._counts_worker.returned.connect(self._show_figures)
        self._counts_worker.errored.connect(lambda exc: show_error(str(exc)))
        self._counts_worker.finished.connect(self._counts_done)
        self._counts_worker.start()

    def _reader(self) -> ReviewStore:
        """A second connection to the review database for the counts worker, opened once."""
        if self._reader_store is None or self._reader_store.path != self.store.path:
            self._reader_store = ReviewStore(self.store.path, self.store.reviewer)
        return self._reader_store

    def _counts_done(self) -> None:
        self._counts_worker = None
        if self._counts_stale:
            self.schedule_counts()

    def _show_figures(self, figures: dict) -> None:
        if figures["session"] is not self.session:  # the slide changed while counting
            return
        for row in ("view", "hpf", "image"):
            self.counts_panel.show_counts(row, figures[row])
        self.counts_panel.show_score(figures["score"])
        self.counts_panel.show_f1(figures["f1"])

    def _on_hpf_area(self) -> None:
        if self._grid_layer is not None:
            self.show_hpf_grid(True)
        self.schedule_counts()

    def _placement(self) -> dict:
        """Scale, offset and units of the slide layer, for layers drawn in its level-0 pixels."""
        layer = self.slide_layer
        return {"scale": tuple(layer.scale[-2:]), "translate": tuple(layer.translate[-2:]), "units": layer.units[-2:]}

    @_reports_errors
    def show_hpf_grid(self, visible: bool) -> None:
        """Draw (or remove) the grid of HPFs the whole-image counts use."""
        if self._grid_layer is not None and self._grid_layer in self.viewer.layers:
            self.viewer.layers.remove(self._grid_layer)
        self._grid_layer = None
        if not visible or self.session is None or not self.session.mpp:
            return
        fields = self.session.counts(None, self.counts_panel.hpf_area.value(), use_drawn=False).fields
        rectangles = [np.array([[f.y, f.x], [f.y + f.h, f.x + f.w]]) for f in fields]
        self._grid_layer = self.viewer.add_shapes(
            rectangles, shape_type="rectangle", edge_color="cyan", face_color="transparent", edge_width=4,
            opacity=0.5, name="HPF grid", **self._placement(),
        )
        self._keep_boxes_active()

    def _show_fields(self) -> None:
        """Draw the HPF rectangles marked on this slide in a layer where HPFs can also be drawn, moved, resized
        and deleted by hand (napari's shape tools); the store follows every finished edit."""
        if self._fields_layer is not None and self._fields_layer in self.viewer.layers:
            self.viewer.layers.remove(self._fields_layer)
        fields = self.session.store.hpf_regions(self.session.slide_id)
        rectangles = [np.array([[f.y, f.x], [f.y + f.h, f.x + f.w]]) for f in fields]
        self._fields_layer = self.viewer.add_shapes(
            rectangles or None, shape_type="rectangle", edge_color="magenta", face_color="transparent", edge_width=6,
            name="marked HPFs", **self._placement(),
        )
        self._fields_layer.current_edge_color = "magenta"
        self._fields_layer.current_face_color = "transparent"
        self._fields_layer.events.data.connect(self._on_fields_edited)
        self._keep_boxes_active()

    @_reports_errors
    def _on_fields_edited(self, event) -> None:
        """Store the marked HPFs as the layer now shows them (each shape counts by its bounding rectangle)."""
        action = getattr(event.action, "value", event.action)
        if action not in ("added", "removed", "changed") or self.session is None:
            return
        store, slide_id = self.session.store, self.session.slide_id
        shown = [_bounding_rectangle(shape) for shape in self._fields_layer.data]
        unmatched = [rect for rect in shown if rect[2] >= 1 and rect[3] >= 1]
        for region in store.hpf_regions(slide_id):
            stored = (region.x, region.y, region.w, region.h)
            match = next((i for i, rect in enumerate(unmatched) if np.allclose(rect, stored, atol=0.5)), None)
            if match is None:
                store.delete_hpf(region.id)
            else:
                unmatched.pop(match)
        for rect in unmatched:
            store.add_hpf(slide_id, rect)
        self.schedule_counts()

    def _keep_boxes_active(self) -> None:
        if self.overlay is not None:
            self.viewer.layers.selection.active = self.overlay.predictions.layer

    @_reports_errors
    def mark_current_hpf(self) -> None:
        """Store the HPF centred on the view as a counted field (the whole-image counts then use marked fields)."""
        if self.session is None:
            show_info(NO_SLIDE)
            return
        hpf = self.current_hpf()
        if hpf is None:
            show_error("The slide has no pixel size, so an HPF has no size in pixels.")
            return
        self.session.store.add_hpf(self.session.slide_id, hpf)
        self._show_fields()
        self.schedule_counts()

    @_reports_errors
    def go_to_hotspot(self) -> None:
        """Centre the view on the 10-HPF window with the most mitoses."""
        if self.session is None or not self.session.mpp:
            show_error("The slide has no pixel size, so there is no HPF to find a hotspot with.")
            return
        hotspot = self.session.counts(None, self.counts_panel.hpf_area.value()).hotspot
        if hotspot is None:
            return
        centre = self.slide_layer.data_to_world((hotspot.y + hotspot.h / 2, hotspot.x + hotspot.w / 2))
        self.viewer.scene.camera.center = tuple(centre[-2:])
        canvas_h, canvas_w = self.viewer.canvas.size
        scale = float(self.slide_layer.scale[-1])
        self.viewer.scene.camera.zoom = min(canvas_w / (hotspot.w * scale), canvas_h / (hotspot.h * scale))
        self.status.setText(f"Hotspot: {hotspot.mitoses} mitoses in {hotspot.area_mm2:.2f} mm².")

    def _choose_export(self, fmt: str, file_filter: str) -> None:
        if self.session is None:
            show_error("Open a slide before exporting.")
            return
        stem = Path(self.slide.path).stem
        suggestion = f"{stem}-counts.csv" if fmt == "counts" else f"{stem}-{fmt}{file_filter.split('*')[-1].rstrip(')')}"
        path, _ = QFileDialog.getSaveFileName(self, "Export", suggestion, file_filter)
        if path:
            self.export(fmt, path)

    @_reports_errors
    def export(self, fmt: str, path: str | Path) -> Path | None:
        """Write this slide's counts CSV (``fmt="counts"``) or its objects in an annotation format."""
        from midog_viewer.formats import atomic
        from midog_viewer.formats.exporting import export_store

        if self.session is None:
            return None
        path = Path(path)
        if fmt == "counts":  # atomic, and never over the review database (export_store guards the rest)
            rows = [self.session.counts(None, self.counts_panel.hpf_area.value(), use_drawn=True)]
            atomic.replace_file(path, lambda temp: write_counts_csv(temp, rows), atomic.store_files(self.session.store.path))
        else:
            export_store(self.session.store, fmt, path, slide_ids=[self.session.slide_id])
        show_info(f"Exported {path.name}.")
        return path

    def _choose_import(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Import annotations", "", "Annotations (*.json *.geojson *.sqlite *.db *.csv)"
        )
        if path:
            self.import_annotations(path)

    @_reports_errors
    def import_annotations(self, path: str | Path) -> None:
        """Import an annotation file (MIDOG JSON, SlideRunner, GeoJSON, CSV) matched to this image by file name."""
        from midog_viewer.formats.importing import import_file, summary_line

        if self.session is None:
            show_error("Open the image the annotations belong to before importing them.")
            return
        summary = import_file(self.session.store, path, image_name=Path(self.slide.path).name)
        self.session.reload()
        self.rebuild_overlay()
        show_info(summary_line(summary))

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
