"""The review dock's "Model" box: which detector is loaded, on which device, and loading another one.

A model the user picked stays; otherwise each slide gets the shipped model made for it. The panel owns the
detector and says when it changed (``loaded(operating_threshold)``), so the dock can move its slider there.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QFileDialog, QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout

from midog_viewer._qt import notify
from midog_viewer._qt.notify import reports_errors
from midog_viewer._qt.viewer import keep_triton_out

#: The detector keeps candidates down to this score; the slider only chooses which are drawn and counted.
DETECTION_FLOOR = 0.1


class ModelPanel(QGroupBox):
    """The detector in use and its buttons; ``detector`` given at construction is kept as the user's choice."""

    loaded = Signal(float)  # the new model's operating threshold

    def __init__(self, detector=None) -> None:
        super().__init__("Model")
        self.detector = detector
        self.label = "stand-in" if detector is not None else ""
        self.chosen = detector is not None
        self._synthetic_warned: set[tuple[str, str]] = set()
        layout = QVBoxLayout(self)
        self.name = QLabel("–")
        self.name.setWordWrap(True)
        self.device = QLabel("Device: –")
        layout.addWidget(self.name)
        layout.addWidget(self.device)
        row = QHBoxLayout()
        self.load_button = QPushButton("Load checkpoint…")
        self.load_button.clicked.connect(self._choose_checkpoint)
        self.load_mmdet_button = QPushButton("Load mmdet…")
        self.load_mmdet_button.clicked.connect(self._choose_mmdet)
        row.addWidget(self.load_button)
        row.addWidget(self.load_mmdet_button)
        layout.addLayout(row)

    @reports_errors
    def load(self, path: str | None, mmdet_config: str | None = None, chosen: bool = True) -> None:
        """Load a checkpoint (None: the shipped default) as the active detector."""
        keep_triton_out()
        from midog_viewer.detect.engine import Detector

        self.detector = Detector(path, score_thr=DETECTION_FLOOR, mmdet_config=mmdet_config)
        self.chosen = chosen
        self.label = str(self.detector.info.path)
        self.show_model()
        # Start from the model's operating point (chosen on validation when it was trained here).
        self.loaded.emit(min(max(self.detector.info.config.score_threshold, DETECTION_FLOOR), 1.0))

    def show_model(self) -> None:
        """Name, tissue and device of the detector in the box."""
        if self.detector is None:
            self.name.setText("Model: no model loaded")
            self.device.setText("Device: –")
            return
        tissue = self.detector.tissue
        self.name.setText(f"Model: {Path(self.label).name}" + (f"\nTrained on {tissue.tissue}" if tissue is not None else ""))
        self.name.setToolTip(self.label)
        self.device.setText(f"Device: {self.detector.device_name}")

    def set_enabled(self, enabled: bool) -> None:
        """Loading another model is refused while one runs."""
        self.load_button.setEnabled(enabled)
        self.load_mmdet_button.setEnabled(enabled)

    def _choose_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load a midog-viewer checkpoint", "", "Checkpoints (*.safetensors *.pt *.pth)")
        if path:
            self.load(path, None)

    def _choose_mmdet(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load an MMDetection checkpoint", "", "mmdet checkpoints (*.pth)")
        if not path:
            return
        config, _ = QFileDialog.getOpenFileName(self, "Its MMDetection config", "", "Python config (*.py)")
        if config:
            self.load(path, config)

    def pick_for(self, path) -> None:
        """Unless the user chose a model, load the shipped one made for this image (real tissue or the sample)."""
        if self.chosen:
            return
        from midog_viewer.detect.models import default_model_for

        wanted = default_model_for(path).path
        if self.detector is None or Path(self.detector.info.path) != wanted:
            self.load(str(wanted), None, chosen=False)

    def warn_if_synthetic(self, slide_path) -> None:
        """Once per model and slide: a model that learnt synthetic fields only finds nothing real on real tissue."""
        from midog_viewer.detect.models import is_synthetic_image

        tissue = self.detector.tissue
        if tissue is None or not tissue.synthetic or is_synthetic_image(slide_path):
            return
        key = (self.label, str(slide_path))
        if key not in self._synthetic_warned:
            self._synthetic_warned.add(key)
            notify.show_warning(f"{tissue.name} learnt {tissue.tissue}: on this real slide its boxes are not mitoses. "
                                "Load a model trained on real tissue.")

    def key(self) -> str:
        """What identifies the model's results (path and stain setting): regions it analysed are not redone."""
        return f"{self.label}|stain={self.detector.stain_normalize if self.detector is not None else None}"
