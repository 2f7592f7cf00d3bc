"""The store's slides with their counts, busiest hotspot first: where a reviewer starts on a cohort."""

from __future__ import annotations

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QGroupBox, QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout

COLUMNS = ("slide", "mitoses", "per 10 HPF", "hotspot", "score")


class CohortPanel(QGroupBox):
    """A table of the store's slides; a double-click asks to open one (``open_requested(path)``)."""

    open_requested = Signal(str)
    refresh_requested = Signal()

    def __init__(self) -> None:
        super().__init__("Slides in this review store")
        layout = QVBoxLayout(self)
        self.refresh_button = QPushButton("List slides with their counts")
        self.refresh_button.clicked.connect(self.refresh_requested.emit)
        self.refresh_button.setFocusPolicy(Qt.NoFocus)
        layout.addWidget(self.refresh_button)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectRows)
        self.table.cellDoubleClicked.connect(self._on_double_click)
        self.table.setVisible(False)  # shown once listed, so the counts above keep their room until then
        layout.addWidget(self.table)
        self._paths: list[str] = []

    def show_rows(self, rows: list[dict]) -> None:
        self.table.setVisible(True)
        self.table.setRowCount(len(rows))
        self._paths = [r["path"] for r in rows]
        for i, r in enumerate(rows):
            cells = (r["slide"], r["mitoses"], None if r["per_10_hpf"] is None else f"{r['per_10_hpf']:.1f}",
                     r["hotspot"], r["score"])
            for j, value in enumerate(cells):
                self.table.setItem(i, j, QTableWidgetItem("–" if value is None else str(value)))

    def _on_double_click(self, row: int, _column: int) -> None:
        self.open_requested.emit(self._paths[row])
