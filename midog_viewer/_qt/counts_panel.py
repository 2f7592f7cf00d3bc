"""The counts panel of the review dock: mitoses in view, in the current HPF and in the whole image.

A plain view: the review widget computes the figures (``review.counts``) and calls :meth:`show_counts`;
the panel's buttons only emit signals, so tests drive the same paths without file dialogs.
"""

from __future__ import annotations

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from midog_viewer.review.counts import DEFAULT_HPF_MM2, SlideCounts

#: Export choices: button text, export format (``counts`` is the counts CSV), file filter.
EXPORTS: tuple[tuple[str, str, str], ...] = (
    ("Counts CSV", "counts", "CSV (*.csv)"),
    ("Objects CSV", "csv", "CSV (*.csv)"),
    ("MIDOG JSON", "coco", "JSON (*.json)"),
    ("SlideRunner", "sliderunner", "SQLite (*.sqlite)"),
    ("QuPath GeoJSON", "geojson", "GeoJSON (*.geojson)"),
    ("MIDOG points (mm)", "midog-json", "JSON (*.json)"),
)
_ROWS = ("view", "hpf", "image")
#: Row titles; two lines where one would widen the dock (the slide keeps most of the window).
_ROW_TITLES = {"view": "Visible region", "hpf": "Current HPF<br>(cyan outline)", "image": "Whole image"}
_COLUMNS = ("accepted", "pending", "rejected", "ground_truth", "atypical")


class CountsPanel(QGroupBox):
    """Counts table, HPF settings, hotspot, mitotic score, live F1, export and import buttons."""

    export_requested = Signal(str, str)  # format, file filter
    import_requested = Signal()
    import_all_requested = Signal()
    hotspot_requested = Signal()
    mark_hpf_requested = Signal()
    grid_toggled = Signal(bool)
    hpf_area_changed = Signal(float)
    pixel_size_given = Signal(float)

    def __init__(self, parent=None) -> None:
        super().__init__("Counts (mitotic figures)", parent)
        layout = QVBoxLayout(self)
        table = QGridLayout()
        for column, name in enumerate(("", "accepted", "pending", "rejected", "ground<br>truth", "atypical"), start=0):
            table.addWidget(QLabel(f"<b>{name}</b>"), 0, column)
        self.cells: dict[tuple[str, str], QLabel] = {}
        for row, key in enumerate(_ROWS, start=1):
            table.addWidget(QLabel(_ROW_TITLES[key]), row, 0)
            for column, name in enumerate(_COLUMNS, start=1):
                cell = QLabel("–")
                self.cells[(key, name)] = cell
                table.addWidget(cell, row, column)
        layout.addLayout(table)

        hpf_row = QHBoxLayout()
        hpf_row.addWidget(QLabel("HPF area (mm²)"))
        self.hpf_area = QDoubleSpinBox()
        self.hpf_area.setDecimals(3)
        self.hpf_area.setRange(0.01, 2.0)
        self.hpf_area.setSingleStep(0.001)
        self.hpf_area.setValue(DEFAULT_HPF_MM2)
        self.hpf_area.valueChanged.connect(self.hpf_area_changed.emit)
        hpf_row.addWidget(self.hpf_area)
        self.grid = QCheckBox("HPF grid")
        self.grid.toggled.connect(self.grid_toggled.emit)
        hpf_row.addWidget(self.grid)
        layout.addLayout(hpf_row)

        # Only for an image whose file records no pixel size (a PNG or JPEG frame): without one, HPFs,
        # per-mm² counts and the match radius have no size in pixels.
        self.pixel_size_row = QWidget()
        pixel_row = QHBoxLayout(self.pixel_size_row)
        pixel_row.setContentsMargins(0, 0, 0, 0)
        pixel_row.addWidget(QLabel("No pixel size in the file: µm/px"))
        self.pixel_size = QDoubleSpinBox()
        self.pixel_size.setDecimals(4)
        self.pixel_size.setRange(0.05, 50.0)
        self.pixel_size.setSingleStep(0.01)
        self.pixel_size.setValue(0.25)
        pixel_row.addWidget(self.pixel_size)
        self.set_pixel_size = QPushButton("Set")
        self.set_pixel_size.setToolTip("Recorded in the review store for this slide (0.25 µm/px: a 40x scan).")
        self.set_pixel_size.clicked.connect(lambda: self.pixel_size_given.emit(self.pixel_size.value()))
        pixel_row.addWidget(self.set_pixel_size)
        self.pixel_size_row.setVisible(False)
        layout.addWidget(self.pixel_size_row)

        buttons = QHBoxLayout()
        self.mark_hpf = QPushButton("Mark current HPF")
        self.mark_hpf.clicked.connect(self.mark_hpf_requested.emit)
        self.hotspot = QPushButton("Go to hotspot")
        self.hotspot.clicked.connect(self.hotspot_requested.emit)
        buttons.addWidget(self.mark_hpf)
        buttons.addWidget(self.hotspot)
        layout.addLayout(buttons)

        self.score = QLabel("Mitotic score: –")
        self.score.setWordWrap(True)
        self.atypical = QLabel("Atypical: –")
        self.atypical.setWordWrap(True)
        self.f1 = QLabel("")
        layout.addWidget(self.score)
        layout.addWidget(self.atypical)
        layout.addWidget(self.f1)

        exports = QGridLayout()
        exports.addWidget(QLabel("Export"), 0, 0)
        self.export_buttons: dict[str, QPushButton] = {}
        for index, (title, fmt, file_filter) in enumerate(EXPORTS):
            button = QPushButton(title)
            button.clicked.connect(lambda _=False, f=fmt, ff=file_filter: self.export_requested.emit(f, ff))
            self.export_buttons[fmt] = button
            exports.addWidget(button, 1 + index // 3, index % 3)
        layout.addLayout(exports)
        imports = QHBoxLayout()
        self.import_button = QPushButton("Import for this slide… (or drop a file)")
        self.import_button.setToolTip("Only the labels of the open slide (matched by file name) are imported.")
        self.import_button.clicked.connect(self.import_requested.emit)
        self.import_all_button = QPushButton("Import all slides…")
        self.import_all_button.setToolTip("Every image of the file goes into the review store, each as its own slide.")
        self.import_all_button.clicked.connect(self.import_all_requested.emit)
        imports.addWidget(self.import_button)
        imports.addWidget(self.import_all_button)
        layout.addLayout(imports)

    def show_pixel_size(self, mpp: float | None) -> None:
        """Offer to record a pixel size only while the slide has none."""
        self.pixel_size_row.setVisible(not mpp)

    def show_counts(self, which: str, totals: dict[str, int] | None) -> None:
        """Fill one row (``view``, ``hpf`` or ``image``) from counts by category; None clears it."""
        for name in _COLUMNS:
            self.cells[(which, name)].setText("–" if totals is None else str(totals[name]))

    def show_score(self, counts: SlideCounts | None, reason: str = "") -> None:
        """The mitotic score and hotspot of the whole image, or why there is none."""
        if counts is None:
            self.score.setText(f"Mitotic score: – {reason}")
            self.atypical.setText("Atypical: –")
            return
        share = "–" if counts.atypical_share is None else f"{counts.atypical_share:.0%}"
        self.atypical.setText(
            f"Atypical: {counts.totals['atypical']} of {counts.totals['mitoses']} mitoses ({share}); "
            f"{counts.atypical_per_hpf:.2f} per HPF, {counts.atypical_per_10_hpf:.1f} per 10 HPF, "
            f"{counts.atypical_per_2_mm2:.1f} per 2 mm²"
        )
        hotspot = ("" if counts.hotspot is None else
                   f"; hotspot (orange outline): {counts.hotspot.mitoses} in {counts.hotspot.area_mm2:.2f} mm²")
        self.score.setText(
            f"Mitotic score {counts.mitotic_score.score} ({counts.per_10_hpf:.1f} per 10 HPF of "
            f"{counts.hpf_mm2:g} mm²{hotspot})"
        )
        self.score.setToolTip(counts.mitotic_score.scaling)

    def show_f1(self, figures: dict | None) -> None:
        """Live MIDOG F1 in view against ground truth, or nothing when there is no ground truth."""
        if figures is None:
            self.f1.setText("")
            return
        self.f1.setText(
            f"In view vs ground truth: F1 {figures['f1']:.3f} (TP {figures['tp']}, FP {figures['fp']}, "
            f"FN {figures['fn']}; precision {figures['precision']:.2f}, recall {figures['recall']:.2f})"
        )
