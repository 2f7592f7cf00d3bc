"""The "Train the detector" dock: choose data and model, run ``midog-viewer train`` (the detector) or
``midog-viewer train-atypical`` (the atypical classifier, on the reviewed subtypes) in its own process, watch it.

Training never runs in the GUI's process: the panel starts ``python -m midog_viewer train …`` with
:class:`QProcess`, polls the run folder's ``progress.jsonl`` with a :class:`QTimer` (progress bar with ETA,
live matplotlib plots of the losses and the validation F1 or balanced accuracy), cancels with SIGTERM (the run
keeps its last checkpoint) and at the end shows the old model's and the new model's validation figures.
The classifier's side (options, command line, how its run reads) is :mod:`midog_viewer._qt.training_atypical`.

Hooks for the review widget: :meth:`TrainingWidget.set_current_store` and :meth:`set_current_model` tell the
panel what the review is using; the ``model_ready`` signal carries the new ``best.safetensors`` path when the
user clicks "Use this model" (connect it to whatever loads a model in the review widget), ``classifier_ready``
the new classifier's (the review dock scores new detections with it).
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import QProcess, QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from midog_viewer._qt.training_atypical import ATYPICAL, DETECTOR, AtypicalOptions, RunKind, result_text, start_text
from midog_viewer.train.progress import ProgressReader

CONFIG_NAMES = ("tiny", "r50", "x101-64x4d")
POLL_MS = 500


@dataclass
class TrainingRequest:
    """What the panel asks ``midog-viewer train`` to do (turned into its command line)."""

    out: Path
    config: str = "tiny"
    epochs: int = 50
    device: str = "cpu"
    stores: list[Path] = field(default_factory=list)
    coco: Path | None = None
    images: Path | None = None
    split: Path | None = None
    init: Path | None = None
    baseline: Path | None = None
    extra: list[str] = field(default_factory=list)

    def arguments(self) -> list[str]:
        """Arguments after ``python -m midog_viewer``."""
        args = ["train"]
        for store in self.stores:
            args += ["--db", str(store)]
        if self.coco is not None:
            args += ["--coco", str(self.coco)]
            if self.images is not None:
                args += ["--images", str(self.images)]
            if self.split is not None:
                args += ["--split", str(self.split)]
        if self.init is not None:
            args += ["--init", str(self.init)]
        else:
            args += ["--config", self.config]
        if self.baseline is not None:
            args += ["--baseline", str(self.baseline)]
        args += ["--epochs", str(self.epochs), "--device", self.device, "--out", str(self.out), "--quiet"]
        return args + list(self.extra)


def default_runs_dir() -> Path:
    """Where the panel puts run folders: beside the per-user review database."""
    from midog_viewer.review.session import default_db_path

    return default_db_path().parent / "runs"


class TrainingWidget(QWidget):
    """Dock widget that trains the detector or the atypical classifier in a separate process (contributed to
    napari as "Train the detector").

    ``model_ready(str)`` is emitted with the path of the new best checkpoint when "Use this model" is clicked,
    ``classifier_ready(str)`` with the new classifier's after an atypical run.
    """

    model_ready = Signal(str)
    classifier_ready = Signal(str)

    def __init__(self, napari_viewer: Any = None, runs_dir: str | Path | None = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
        self.current_store: Path | None = None
        self.current_model: Path | None = None
        self.process: QProcess | None = None
        self.run_dir: Path | None = None
        self.reader: ProgressReader | None = None
        self.events: list[dict[str, Any]] = []
        self.result: dict[str, Any] | None = None
        self.kind: RunKind = DETECTOR  # of the run started last
        self._stderr = ""
        self._build_ui()
        self._timer = QTimer(self, interval=POLL_MS, timeout=self.poll)
        from midog_viewer.review.session import default_db_path

        self.set_current_store(default_db_path())

    # -- UI -------------------------------------------------------------------------------------

    def _build_ui(self) -> None:
        from midog_viewer._qt.scroll_area import in_scroll_area

        content = QWidget()
        layout = QVBoxLayout(content)
        self.target_box = QComboBox()
        self.target_box.addItems(["Detector", "Atypical classifier"])
        self.target_box.currentIndexChanged.connect(lambda _: self._show_target())
        target = QFormLayout()
        target.addRow("Train", self.target_box)
        layout.addLayout(target)

        data = self.data_box = QGroupBox("Data")
        form = QFormLayout(data)
        self.use_current_store = QCheckBox("Current review store")
        form.addRow(self.use_current_store)
        self.store_list = QListWidget()
        self.store_list.setMaximumHeight(70)
        store_buttons = QHBoxLayout()
        add_store = QPushButton("Add store…", clicked=self._choose_store)
        remove_store = QPushButton("Remove", clicked=self._remove_store)
        store_buttons.addWidget(add_store)
        store_buttons.addWidget(remove_store)
        form.addRow("Other stores", self.store_list)
        form.addRow(store_buttons)
        self.coco_rows = QWidget()  # the detector's other data
        coco = QFormLayout(self.coco_rows)
        coco.setContentsMargins(0, 0, 0, 0)
        self.coco_edit, self.images_edit, self.split_edit = QLineEdit(), QLineEdit(), QLineEdit()
        coco.addRow("COCO JSON", self._with_browse(self.coco_edit, self._choose_coco))
        coco.addRow("Images", self._with_browse(self.images_edit, self._choose_images))
        coco.addRow("Split file", self._with_browse(self.split_edit, self._choose_split))
        form.addRow(self.coco_rows)
        layout.addWidget(data)
        self.atypical_options = AtypicalOptions(self._with_browse)
        layout.addWidget(self.atypical_options)

        model = QGroupBox("Model")
        form = QFormLayout(model)
        self.detector_rows = QWidget()
        rows = QFormLayout(self.detector_rows)
        rows.setContentsMargins(0, 0, 0, 0)
        self.config_box = QComboBox()
        self.config_box.addItems(CONFIG_NAMES)
        rows.addRow("Size", self.config_box)
        self.fine_tune = QCheckBox("Start from the current model")
        rows.addRow(self.fine_tune)
        self.epochs_box = QSpinBox(minimum=1, maximum=1000, value=50)
        rows.addRow("Epochs", self.epochs_box)
        form.addRow(self.detector_rows)
        self.device_box = QComboBox()
        self.device_box.addItems(_devices())
        form.addRow("Device", self.device_box)
        self.extra_edit = QLineEdit(placeholderText="e.g. --tune-threshold --random-patches 8 --lr 0.005")
        form.addRow("Extra options", self.extra_edit)
        layout.addWidget(model)

        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start training", clicked=self.start)
        self.cancel_button = QPushButton("Cancel", clicked=self.cancel, enabled=False)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.progress_bar = QProgressBar(minimum=0, maximum=1000, value=0)
        self.progress_bar.setFormat("idle")
        layout.addWidget(self.progress_bar)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)

        self.figure = Figure(figsize=(4, 4), tight_layout=True)
        self.loss_axes = self.figure.add_subplot(2, 1, 1)
        self.f1_axes = self.figure.add_subplot(2, 1, 2)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(260)
        layout.addWidget(self.canvas)
        self._draw_plots()

        self.result_label = QLabel("")
        layout.addWidget(self.result_label)
        self.use_button = QPushButton("Use this model", clicked=self.use_model, enabled=False)
        layout.addWidget(self.use_button)
        in_scroll_area(self, content)  # the panel scrolls instead of growing the window past the screen
        self._show_target()

    def _show_target(self) -> None:
        """Show the settings of what is to be trained: the detector's, or the atypical classifier's."""
        atypical = self.target_box.currentIndex() == 1
        self.data_box.setTitle("Review stores (split by slide)" if atypical else "Data (split by image)")
        self.coco_rows.setVisible(not atypical)
        self.detector_rows.setVisible(not atypical)
        self.atypical_options.setVisible(atypical)
        self.extra_edit.setPlaceholderText("e.g. --lr 0.0005 --batch-size 32" if atypical
                                           else "e.g. --tune-threshold --random-patches 8 --lr 0.005")
        if not self.is_running():  # the plots' axes name what the chosen run reports
            self.kind = ATYPICAL if atypical else DETECTOR
            self._draw_plots()

    def _with_browse(self, edit: QLineEdit, handler) -> QWidget:
        row = QWidget()
        box = QHBoxLayout(row)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(edit)
        box.addWidget(QPushButton("…", clicked=handler, maximumWidth=30))
        return row

    def _choose_store(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Add a review store", "", "Review stores (*.sqlite *.db)")
        if path:
            self.add_store(path)

    def _remove_store(self) -> None:
        for item in self.store_list.selectedItems():
            self.store_list.takeItem(self.store_list.row(item))

    def _choose_coco(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "MIDOG COCO-style JSON", "", "JSON (*.json)")
        if path:
            self.coco_edit.setText(path)

    def _choose_images(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder of the images the JSON names")
        if path:
            self.images_edit.setText(path)

    def _choose_split(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Split file (train_val_split.txt)", "", "Text (*.txt)")
        if path:
            self.split_edit.setText(path)

    # -- hooks ----------------------------------------------------------------------------------

    def set_current_store(self, path: str | Path | None) -> None:
        """The review store the review widget writes to (the "current store" data choice)."""
        self.current_store = Path(path) if path is not None else None
        self.use_current_store.setEnabled(self.current_store is not None)
        self.use_current_store.setChecked(self.current_store is not None and self.current_store.is_file())
        self.use_current_store.setToolTip(str(self.current_store or "no review store"))

    def set_current_model(self, path: str | Path | None) -> None:
        """The model the review widget uses: the baseline the new model is compared with, or the start point."""
        self.current_model = Path(path) if path is not None else None
        self.fine_tune.setEnabled(self.current_model is not None)
        self.fine_tune.setToolTip(str(self.current_model or "no model loaded"))

    def add_store(self, path: str | Path) -> None:
        self.store_list.addItem(str(path))

    # -- running ----------------------------------------------------------------------------------

    def request(self) -> Any:
        """The run the panel's settings describe, in a new timestamped folder under ``runs_dir``: a
        :class:`TrainingRequest`, or an :class:`~midog_viewer._qt.training_atypical.AtypicalRequest`."""
        stores = [Path(self.store_list.item(i).text()) for i in range(self.store_list.count())]
        if self.use_current_store.isChecked() and self.current_store is not None:
            stores.insert(0, self.current_store)
        out = self.runs_dir / time.strftime("run-%Y%m%d-%H%M%S")
        if self.target_box.currentIndex() == 1:
            return self.atypical_options.request(out.with_name("atypical-" + out.name), stores,
                                                 self.device_box.currentText(), shlex.split(self.extra_edit.text()))
        text = {name: edit.text().strip() for name, edit in
                (("coco", self.coco_edit), ("images", self.images_edit), ("split", self.split_edit))}
        fine_tune = self.fine_tune.isChecked() and self.current_model is not None
        return TrainingRequest(
            out=out,
            config=self.config_box.currentText(),
            epochs=self.epochs_box.value(),
            device=self.device_box.currentText(),
            stores=stores,
            coco=Path(text["coco"]) if text["coco"] else None,
            images=Path(text["images"]) if text["images"] else None,
            split=Path(text["split"]) if text["split"] else None,
            init=self.current_model if fine_tune else None,
            baseline=self.current_model if not fine_tune else None,
            extra=shlex.split(self.extra_edit.text()),
        )

    def start(self) -> None:
        """Start ``midog-viewer train`` in a child process for the current settings."""
        if self.is_running():
            return
        request = self.request()
        request.out.parent.mkdir(parents=True, exist_ok=True)
        self.kind = ATYPICAL if request.arguments()[0] == ATYPICAL.command else DETECTOR
        self.run_dir, self.reader = request.out, ProgressReader(request.out)
        self.events, self.result, self._stderr = [], None, ""
        self.use_button.setEnabled(False)
        self.result_label.setText("")
        self.process = QProcess(self)
        self.process.setProgram(sys.executable)
        self.process.setArguments(["-m", "midog_viewer", *request.arguments()])
        self.process.readyReadStandardError.connect(self._read_stderr)
        self.process.finished.connect(self._on_finished)
        self.process.start()
        self._timer.start()
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("checking the data…")
        self.status.setText(f"Training in {request.out}")
        self._draw_plots()

    def cancel(self) -> None:
        """Ask the run to stop (SIGTERM): it finishes the current step and keeps its last checkpoint."""
        if self.is_running():
            self.status.setText("Cancelling after the current step…")
            self.process.terminate()

    def is_running(self) -> bool:
        return self.process is not None and self.process.state() != QProcess.NotRunning

    def _read_stderr(self) -> None:
        self._stderr += bytes(self.process.readAllStandardError()).decode(errors="replace")

    def poll(self) -> None:
        """Read new progress lines and update the bar, the status line and the plots."""
        if self.reader is None:
            return
        new = self.reader.new_events()
        if not new:
            return
        self.events += new
        last_step = next((e for e in reversed(self.events) if e["event"] == "step"), None)
        start = next((e for e in reversed(self.events) if e["event"] == "start"), None)
        if last_step is not None:
            total = max(1, last_step["total_steps"])
            self.progress_bar.setValue(int(1000 * last_step["step"] / total))
            self.progress_bar.setFormat(f"step {last_step['step']}/{total} · ETA {_duration(last_step['eta_s'])}")
        elif start is not None:
            self.progress_bar.setFormat(start_text(start))
        self._draw_plots()

    def _on_finished(self, exit_code: int, _status=None) -> None:
        self._timer.stop()
        self.poll()
        self._read_stderr()
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        final = self.events[-1]["event"] if self.events else None
        if exit_code != 0 or final not in ("done", "cancelled"):
            message = self._stderr.strip().splitlines()[-1] if self._stderr.strip() else f"exit status {exit_code}"
            self.progress_bar.setFormat("failed")
            self.status.setText(f"Training failed: {message}")
            return
        metrics_path = self.run_dir / "metrics.json"
        self.result = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
        if final == "cancelled":
            self.progress_bar.setFormat("cancelled")
            self.status.setText(f"Cancelled; the last checkpoint is {self.run_dir / 'last.safetensors'}")
        else:
            self.progress_bar.setValue(1000)
            self.progress_bar.setFormat("done")
            self.status.setText(f"Done: {self.run_dir}")
        self._show_result()

    def _show_result(self) -> None:
        text = result_text(self.kind, self.result)
        if text is None:
            return
        self.result_label.setText(text)
        self.use_button.setEnabled((self.run_dir / self.kind.model_file).is_file())

    def use_model(self) -> None:
        """Hand the new model (best detector checkpoint, or classifier) to the review dock of this viewer and to
        whoever else listens."""
        if self.run_dir is None or not (self.run_dir / self.kind.model_file).is_file():
            return
        path = str(self.run_dir / self.kind.model_file)
        review = self._review_widget()
        if self.kind is ATYPICAL:
            self.atypical_options.set_current_classifier(path)
            self.classifier_ready.emit(path)
            if review is not None:
                review.use_atypical_model(path)
        else:
            self.set_current_model(path)
            self.model_ready.emit(path)
            if review is not None:
                review.use_model(path)
        self.status.setText(f"Using {path}")

    def _review_widget(self) -> Any:
        """The "Mitosis review" dock of the same viewer, if it is open."""
        from midog_viewer._qt.review_widget import ReviewWidget

        window = getattr(self.viewer, "window", None)
        docks = getattr(window, "dock_widgets", {}) if window is not None else {}
        return next((w for w in docks.values() if isinstance(w, ReviewWidget)), None)

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt's name)
        super().showEvent(event)
        self.sync_with_review()

    def sync_with_review(self) -> None:
        """Take the review dock's store and model as "current" (on show and before a run starts)."""
        review = self._review_widget()
        if review is not None:
            self.set_current_store(review.store.path)
            info = getattr(review.detector, "info", None)
            if info is not None and info.path:
                self.set_current_model(info.path)
            self.atypical_options.set_current_classifier(review.runner.classifier_path)

    # -- plots ------------------------------------------------------------------------------------

    def _draw_plots(self) -> None:
        steps = [e for e in self.events if e["event"] == "step"]
        epochs = [e for e in self.events if e["event"] == "epoch"]
        metric = self.kind.metric
        baseline = next((e[metric] for e in self.events if e["event"] == "baseline"), None)
        self.loss_axes.clear()
        self.loss_axes.set_ylabel("loss")
        self.loss_axes.set_xlabel("step")
        if steps:
            self.loss_axes.plot([e["step"] for e in steps], [e["loss"] for e in steps], label="total")
            for key in ("loss_rpn_cls", "s0.loss_cls", "s0.loss_bbox"):
                if key in steps[-1].get("losses", {}):
                    self.loss_axes.plot([e["step"] for e in steps], [e["losses"].get(key) for e in steps],
                                        label=key, linewidth=0.8)
            self.loss_axes.legend(fontsize="x-small")
        self.f1_axes.clear()
        self.f1_axes.set_ylabel(self.kind.metric_label)
        self.f1_axes.set_xlabel("epoch")
        self.f1_axes.set_ylim(0, 1)
        if epochs:
            self.f1_axes.plot([e["epoch"] for e in epochs], [e[metric] for e in epochs], "o-", label="new model")
        if baseline is not None:
            self.f1_axes.axhline(baseline, color="grey", linestyle="--", label="old model")
        if epochs or baseline is not None:
            self.f1_axes.legend(fontsize="x-small")
        self.canvas.draw_idle()

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        """Closing the panel stops its run the clean way (the last checkpoint is kept)."""
        if self.is_running():
            self.process.terminate()
            self.process.waitForFinished(30_000)
        super().closeEvent(event)


def _devices() -> list[str]:
    import torch

    return ["cuda", "cpu"] if torch.cuda.is_available() else ["cpu"]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"
