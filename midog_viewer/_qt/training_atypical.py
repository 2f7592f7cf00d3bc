"""The atypical-classifier side of the training panel: its options box, its command line, how its run reads.

The panel (:mod:`midog_viewer._qt.training_widget`) runs ``python -m midog_viewer train-atypical --store …``
in the same :class:`QProcess` machinery as the detector's ``train``, polls the same ``progress.jsonl`` (events
``start``, ``baseline``, ``step``, ``epoch``, ``done``; :mod:`midog_viewer.train.progress`) and at the end
offers ``model.safetensors`` to the review dock, which then scores the p_atypical of new detections with it.
What trains is each mitotic figure whose subtype a reviewer set (T) or an imported file gave: see
:mod:`midog_viewer.atypical.reviewed`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QCheckBox, QFileDialog, QFormLayout, QGroupBox, QLineEdit, QSpinBox, QWidget


@dataclass(frozen=True)
class RunKind:
    """What differs between the panel's two runs: the command, the per-epoch validation figure, the model file."""

    command: str
    metric: str  # key of the validation figure in ``epoch`` and ``baseline`` events
    metric_label: str
    model_file: str  # the file "Use this model" hands on


DETECTOR = RunKind("train", "val_f1", "validation F1", "best.safetensors")
ATYPICAL = RunKind("train-atypical", "val_balanced_accuracy", "balanced accuracy", "model.safetensors")
#: Epochs of a fine-tuning run unless changed (``train-atypical``'s own default when fine-tuning).
FINE_TUNE_EPOCHS = 10


@dataclass
class AtypicalRequest:
    """What the panel asks ``midog-viewer train-atypical`` to do (turned into its command line)."""

    out: Path
    stores: list[Path] = field(default_factory=list)
    data: Path | None = None  # base crops (a real_mitosis-style folder) mixed in
    init: Path | None = None  # classifier to fine-tune; None: the command's default (the shipped one)
    scratch: bool = False  # a new network instead of a fine-tuned one
    epochs: int = FINE_TUNE_EPOCHS
    device: str = "cpu"
    extra: list[str] = field(default_factory=list)

    def arguments(self) -> list[str]:
        """Arguments after ``python -m midog_viewer``."""
        args = [ATYPICAL.command]
        for store in self.stores:
            args += ["--store", str(store)]
        if self.data is not None:
            args += ["--data", str(self.data)]
        if self.scratch:
            args.append("--scratch")
        elif self.init is not None:
            args += ["--init", str(self.init)]
        args += ["--epochs", str(self.epochs), "--device", self.device, "--out", str(self.out), "--quiet"]
        return args + list(self.extra)


def start_text(event: dict[str, Any]) -> str:
    """The progress bar's text before the first step, from a run's ``start`` event (either kind)."""
    if "train_crops" in event:
        return (f"starting: {event['train_crops']} training crops ({event['train_atypical']} atypical), "
                f"{event['val_crops']} for validation")
    return f"starting: {event['train_images']} training images, {event['val_images']} for validation"


def result_text(kind: RunKind, metrics: dict[str, Any] | None) -> str | None:
    """The old model's and the new model's validation figures from a finished run's ``metrics.json``."""
    if not metrics:
        return None
    if kind is DETECTOR:
        if metrics.get("val_f1") is None:
            return None
        old = metrics.get("baseline_f1")
        old_text = f"{old:.3f}" if old is not None else "–"
        return (f"Validation F1: old model {old_text} → new model {metrics['val_f1']:.3f} "
                f"(epoch {metrics['best_epoch']})")
    final = metrics.get("final_tta")
    if not final:
        return None
    old = metrics.get("baseline") or {}

    def figures(result: dict[str, Any]) -> str:
        overall = result.get("all", {})
        auroc = overall.get("auroc")
        return (f"{overall.get('balanced_accuracy', 0):.3f} at threshold {result['threshold']:.2f}, AUROC "
                f"{'–' if auroc is None else f'{auroc:.3f}'}")

    before = figures(old) if old else "–"
    return f"Validation balanced accuracy: current classifier {before} → new classifier {figures(final)}"


class AtypicalOptions(QGroupBox):
    """The "Atypical classifier" box: base crops to mix in, start from the current classifier, epochs."""

    def __init__(self, with_browse: Callable[[QLineEdit, Callable[[], None]], QWidget]) -> None:
        super().__init__("Atypical classifier (trains on the reviewed subtypes: T marks them)")
        form = QFormLayout(self)
        self.data_edit = QLineEdit(placeholderText="optional: a real_mitosis-style folder of rated crops")
        form.addRow("Base crops", with_browse(self.data_edit, self._choose_data))
        self.fine_tune = QCheckBox("Start from the current classifier", checked=True)
        form.addRow(self.fine_tune)
        self.epochs_box = QSpinBox(minimum=1, maximum=1000, value=FINE_TUNE_EPOCHS)
        form.addRow("Epochs", self.epochs_box)
        self.current: Path | None = None
        self.set_current_classifier(None)

    def _choose_data(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder with images.csv and objects.csv")
        if path:
            self.data_edit.setText(path)

    def set_current_classifier(self, path: str | Path | None) -> None:
        """The classifier the review dock scores with (None: the shipped one): the start of a fine-tuning run."""
        self.current = Path(path) if path is not None else None
        self.fine_tune.setToolTip(str(self.current or "the shipped classifier"))

    def request(self, out: Path, stores: list[Path], device: str, extra: list[str]) -> AtypicalRequest:
        data = self.data_edit.text().strip()
        return AtypicalRequest(out=out, stores=stores, data=Path(data) if data else None, init=self.current,
                               scratch=not self.fine_tune.isChecked(), epochs=self.epochs_box.value(), device=device,
                               extra=extra)
