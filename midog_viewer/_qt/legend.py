"""What each box on the slide means: one table of looks (colour, symbol, border) and the dock's legend of it.

The colours keep their review meaning (:mod:`midog_viewer.review.status`): yellow is a prediction not
reviewed yet, red an error (a rejected prediction), white an annotation or an accepted prediction. White
alone would mean four things, so the symbol and border tell them apart: an accepted prediction is a thick
white square, a mitosis added by hand a thick white circle, a ground-truth mitosis a thin white square, and a
ground-truth look-alike (labelled "not a mitosis") a thin grey diamond, so it never reads as a missed mitosis.
An atypical mitotic figure keeps its own look and gets a second, thin frame around it in the same colour (a
double border), so yellow/red/white keep their meaning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPixmap, QPolygonF
from qtpy.QtWidgets import QGridLayout, QGroupBox, QLabel

from midog_viewer.classes import HARD_NEGATIVE

#: Relative border widths (a fraction of the box side): predictions thick, annotations thin.
THICK = 0.10
THIN = 0.05
#: A ground-truth look-alike: white dimmed to grey, so it reads as "not a mitosis".
GREY = (0.62, 0.62, 0.62, 1.0)
#: The review colours (:func:`midog_viewer.review.status.colour_for`) as RGBA, and the look-alikes' grey.
RGBA = {"yellow": (1.0, 1.0, 0.0, 1.0), "white": (1.0, 1.0, 1.0, 1.0), "red": (1.0, 0.0, 0.0, 1.0), "grey": GREY}
#: The smallest a box is drawn on screen (px), so red stays visible at whole-slide zoom.
MIN_SCREEN_PX = 12
HAND_SOURCE = "hand"


@dataclass(frozen=True)
class Look:
    """How one kind of box is drawn, and what it means."""

    key: str
    colour: str
    symbol: str
    border: float
    meaning: str

    @property
    def rgba(self) -> tuple[float, float, float, float]:
        return RGBA[self.colour]


LOOKS: tuple[Look, ...] = (
    Look("pending", "yellow", "square", THICK, "prediction, not reviewed yet"),
    Look("accepted", "white", "square", THICK, "accepted prediction (a mitosis)"),
    Look("rejected", "red", "square", THICK, "rejected prediction, or relabelled look-alike"),
    Look("hand", "white", "disc", THICK, "mitosis added by hand"),
    Look("truth mitosis", "white", "square", THIN, "ground truth: mitosis"),
    Look("truth look-alike", "grey", "diamond", THIN, "ground truth: look-alike (not a mitosis)"),
)
LOOK = {look.key: look for look in LOOKS}
#: The outer frame of an atypical mitotic figure: its box's colour, thin, this much larger than the box.
ATYPICAL_MARGIN = 1.3
ATYPICAL_BORDER = 0.04
ATYPICAL_MEANING = "atypical mitotic figure (double frame, in its box's colour; T toggles)"
#: Border width of each overlay layer's boxes (the layers hold predictions or annotations; annotations' per row).
PREDICTION_BORDER = THICK
ANNOTATION_BORDER = THIN


def annotation_look(source: str, label: str) -> Look:
    """The look of an annotation: added by hand, a ground-truth look-alike, or a ground-truth mitosis."""
    if source == HAND_SOURCE:
        return LOOK["hand"]
    if label == HARD_NEGATIVE:
        return LOOK["truth look-alike"]
    return LOOK["truth mitosis"]


def annotation_colours(colours: np.ndarray, sources: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Status colours of annotations with ground-truth look-alikes turned grey (a copy)."""
    out = np.array(colours, dtype=np.float32).reshape(-1, 4)
    lookalike = (np.asarray(labels, dtype=object) == HARD_NEGATIVE) & (np.asarray(sources, dtype=object) != HAND_SOURCE)
    shown = out[:, 3] > 0  # deleted ones stay transparent
    out[lookalike & shown] = GREY
    return out


def _icon(look: Look, side: int = 18, double: bool = False) -> QPixmap:
    """A small picture of a look on the dark canvas colour (``double``: with the atypical outer frame)."""
    pixmap = QPixmap(side, side)
    pixmap.fill(QColor(38, 41, 48))
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.Antialiasing)
    r, g, b, _ = (int(255 * v) for v in look.rgba)
    painter.setPen(QPen(QColor(r, g, b), max(1.0, look.border * 2.5 * side / 10)))
    painter.setBrush(Qt.NoBrush)
    m = side * 0.18
    if look.symbol == "disc":
        painter.drawEllipse(QPointF(side / 2, side / 2), side / 2 - m, side / 2 - m)
    elif look.symbol == "diamond":
        c = side / 2
        painter.drawPolygon(QPolygonF([QPointF(c, m), QPointF(side - m, c), QPointF(c, side - m), QPointF(m, c)]))
    else:
        painter.drawRect(int(m), int(m), int(side - 2 * m), int(side - 2 * m))
    if double:
        painter.setPen(QPen(QColor(r, g, b), 1.0))
        painter.drawRect(1, 1, side - 3, side - 3)
    painter.end()
    return pixmap


class Legend(QGroupBox):
    """The dock's legend: one row per look, its picture and its meaning (``rows[key]`` is the text label)."""

    def __init__(self, parent=None) -> None:
        super().__init__("Legend", parent)
        grid = QGridLayout(self)
        grid.setContentsMargins(6, 4, 6, 4)
        grid.setVerticalSpacing(1)
        self.rows: dict[str, QLabel] = {}
        for index, look in enumerate(LOOKS):
            icon = QLabel()
            icon.setPixmap(_icon(look))
            text = QLabel(look.meaning)
            text.setWordWrap(True)  # two columns of meanings must not widen the dock past the slide
            grid.addWidget(icon, index // 2, 2 * (index % 2))
            grid.addWidget(text, index // 2, 2 * (index % 2) + 1)
            self.rows[look.key] = text
        icon = QLabel()
        icon.setPixmap(_icon(LOOK["accepted"], double=True))
        #: The atypical entry (not a look of its own: a frame added to any look of a mitotic figure).
        self.atypical = QLabel(ATYPICAL_MEANING)
        self.atypical.setWordWrap(True)
        row = (len(LOOKS) + 1) // 2
        grid.addWidget(icon, row, 0)
        grid.addWidget(self.atypical, row, 1, 1, 3)
        self.setToolTip("A cyan frame marks the selected box. Colour by ground truth: yellow a hit, red a false "
                        "positive, white ground truth (alone: missed).")
