"""The review dock's model box and detection runs: a part of :class:`ReviewWidget`.

Loading and choosing the model for what is open, and running the detector on a region in a superqt
``thread_worker`` (batches stored and drawn as they come, cancel with Esc), kept apart from the review keys.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QFileDialog
from superqt.utils import thread_worker

from midog_viewer._qt import notify
from midog_viewer._qt.notify import NO_SLIDE
from midog_viewer._qt.notify import reports_errors as _reports_errors
from midog_viewer.errors import MidogError
from midog_viewer.review.status import Status, colour_for

#: The detector keeps candidates down to this score; the slider only chooses which are drawn and counted.
DETECTION_FLOOR = 0.1


_RGBA = {"yellow": (1.0, 1.0, 0.0, 1.0), "white": (1.0, 1.0, 1.0, 1.0), "red": (1.0, 0.0, 0.0, 1.0)}
_HIDDEN = (0.0, 0.0, 0.0, 0.0)


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


class ModelAndDetection:
    """Model box and detection of :class:`~midog_viewer._qt.review_widget.ReviewWidget`."""

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
            notify.show_warning(f"{tissue.name} learnt {tissue.tissue}: on this real slide its boxes are not mitoses. "
                         "Load a model trained on real tissue.")

    # -- detection ------------------------------------------------------------------------------

    def _model_key(self) -> str:
        return f"{self.model_label}|stain={getattr(self.detector, 'stain_normalize', None)}"

    def detect_visible(self, wait: bool = False) -> None:
        """Analyse the part of the view not yet analysed by this model."""
        region = self.visible_region()
        if region is None:
            notify.show_info(NO_SLIDE)
            return
        self.detect_region(self.done_regions.missing(self._model_key(), region, (self.slide.width, self.slide.height)),
                           wait=wait)

    def detect_whole(self, wait: bool = False) -> None:
        """Analyse the whole image (with progress; Cancel or Esc stops it)."""
        if self.slide is None:
            notify.show_info(NO_SLIDE)
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
            notify.show_error("No detection model is loaded; load a checkpoint first.")
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
        notify.show_error(message)
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
