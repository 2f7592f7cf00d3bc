"""The review dock's "Review" box: colour mode, the keys, the selection, "k of N reviewed", reviewer, where saved."""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QComboBox, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QVBoxLayout

from midog_viewer.review.session import ReviewSession

KEY_HELP = (
    "<b>Keys</b> (canvas focused): <b>A</b> accept · <b>R</b> reject · <b>H</b> hard negative · "
    "<b>Space</b>/<b>N</b> next pending · <b>P</b> previous · <b>Ctrl+Z</b> undo · <b>Ctrl+Shift+Z</b> redo · "
    "<b>Esc</b> cancel detection. <b>Click</b> a box to select it; <b>Shift+click</b> adds a missed mitosis."
)


class ReviewBox(QGroupBox):
    """A plain view of the review state; the dock fills it (:meth:`show_progress`, :meth:`show_selection`)."""

    def __init__(self) -> None:
        super().__init__("Review")
        layout = QVBoxLayout(self)
        colour_row = QHBoxLayout()
        colour_row.addWidget(QLabel("Colour by"))
        self.colour_mode = QComboBox()
        self.colour_mode.addItems(["review", "ground truth (TP yellow, FP red)"])
        colour_row.addWidget(self.colour_mode)
        layout.addLayout(colour_row)
        keys = QLabel(KEY_HELP)
        keys.setWordWrap(True)
        layout.addWidget(keys)
        self.selection_label = QLabel("Nothing selected.")
        layout.addWidget(self.selection_label)
        self.progress = QLabel("")
        layout.addWidget(self.progress)
        reviewer_row = QHBoxLayout()
        reviewer_row.addWidget(QLabel("Reviewer"))
        self.reviewer_name = QLineEdit()
        self.reviewer_name.setToolTip("Every decision is stored with this name; Ctrl+Z undoes only this reviewer's.")
        reviewer_row.addWidget(self.reviewer_name)
        layout.addLayout(reviewer_row)
        self.saved_in = QLabel("")
        self.saved_in.setWordWrap(True)
        layout.addWidget(self.saved_in)

    def show_progress(self, session: ReviewSession | None, threshold: float) -> None:
        """"k of N reviewed": mitotic-figure predictions on show (at the threshold) that have a verdict."""
        if session is None:
            self.progress.setText("")
            return
        reviewed, shown = session.review_progress(threshold)
        self.progress.setText(f"Reviewed {reviewed} of {shown} detections at score ≥ {threshold:.2f}.")

    def show_selection(self, session: ReviewSession | None, key: int | None) -> None:
        if key is None or session is None:
            self.selection_label.setText("Nothing selected.")
            return
        row = session.row_of(key)
        t = session.table
        score = "" if np.isnan(t.score[row]) else f", score {t.score[row]:.2f}"
        self.selection_label.setText(f"Selected: {t.label[row]} ({t.status[row]}{score})")
