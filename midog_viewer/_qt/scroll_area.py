"""Docks that scroll instead of growing the window past the screen, as wide as their text needs."""

from __future__ import annotations

from qtpy.QtCore import QEvent, QObject, Qt
from qtpy.QtWidgets import QFrame, QScrollArea, QVBoxLayout, QWidget


class _FitWidth(QObject):
    """Keeps ``owner`` at least as wide as ``content`` asks, re-read whenever the content's layout changes
    (napari's style sheet, applied after construction, makes text wider)."""

    def __init__(self, owner: QWidget, content: QWidget, extra: int) -> None:
        super().__init__(owner)
        self.owner, self.content, self.extra = owner, content, extra
        content.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
        if event.type() in (QEvent.LayoutRequest, QEvent.Show, QEvent.StyleChange, QEvent.Polish):
            self.owner.setMinimumWidth(self.content.sizeHint().width() + self.extra)
        return False


def in_scroll_area(owner: QWidget, content: QWidget) -> None:
    """Show ``content`` in ``owner`` through a vertical scroll area, ``owner`` as wide as the content needs.

    A dock then never makes the window taller than the screen (it scrolls instead), and its text is not cut.
    """
    area = QScrollArea(owner)
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
    area.setWidget(content)
    layout = QVBoxLayout(owner)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(area)
    _FitWidth(owner, content, area.verticalScrollBar().sizeHint().width())
