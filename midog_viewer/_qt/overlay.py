"""The review overlay: detections, hard negatives and ground truth as napari Points layers of squares.

napari Shapes needs seconds per 10,000 rectangles; a Points layer with square symbols sized to the box
side draws the same boxes from one vertex buffer. Per-object data (id, score, label, status) lives in
each layer's ``features``. A decision recolours one row: the row's border colour is written into napari's
colour table and into the vispy vertex buffer in place, so 100,000 boxes are not re-uploaded for one key
press (``benchmarks/overlay.py`` measures both paths). :class:`OverlayPainter` keeps the layers equal to a
review session by following its ``objects_changed`` event: a decision recolours its rows, new rows are appended,
a reload redraws everything.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from napari.layers import Points
from qtpy.QtCore import QTimer

from midog_viewer._qt.legend import (
    ANNOTATION_BORDER, ATYPICAL_BORDER, ATYPICAL_MARGIN, MIN_SCREEN_PX, PREDICTION_BORDER, RGBA, annotation_colours,
    annotation_look,
)
from midog_viewer.classes import MITOTIC_FIGURE
from midog_viewer.review.events import ObjectsChanged
from midog_viewer.review.navigation import boxes_to_points
from midog_viewer.review.session import DETECTION, ReviewSession
from midog_viewer.review.status import Status, colour_for

#: The frame around the selected box: cyan (no status uses it), this much larger than the box.
SELECTION_COLOUR = "cyan"
SELECTION_MARGIN = 1.35


def empty_features() -> pd.DataFrame:
    """The feature table of an overlay layer with no rows."""
    return pd.DataFrame(
        {
            "id": np.zeros(0, dtype=np.int64),
            "score": np.zeros(0, dtype=np.float32),
            "label": np.zeros(0, dtype=object),
            "status": np.zeros(0, dtype=object),
        }
    )


class BoxLayer:
    """One napari Points layer of square boxes with fast per-row recolouring.

    Rows keep the order in which boxes were set; ``row_of`` maps object ids to rows.
    """

    def __init__(
        self,
        viewer,
        name: str,
        *,
        scale: Sequence[float] = (1.0, 1.0),
        translate: Sequence[float] = (0.0, 0.0),
        units: Sequence | None = None,
        opacity: float = 1.0,
        visible: bool = True,
        border: float = PREDICTION_BORDER,
    ) -> None:
        self.viewer = viewer
        self.layer = Points(
            np.zeros((0, 2), dtype=np.float32),
            name=name,
            symbol="square",
            face_color="transparent",
            border_width=border,
            border_width_is_relative=True,
            scale=tuple(scale),
            translate=tuple(translate),
            units=units,
            opacity=opacity,
            visible=visible,
            features=empty_features(),
            canvas_size_limits=(MIN_SCREEN_PX, 10000),  # red stays visible at whole-slide zoom
        )
        viewer.add_layer(self.layer)
        self.border = border
        self.ids = np.zeros(0, dtype=np.int64)
        self._boxes = np.zeros((0, 4), dtype=np.float32)
        self._row_of: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def row_of(self, object_id: int) -> int | None:
        """The row of an object in this layer, or None when it is not here."""
        return self._row_of.get(int(object_id))

    def set_boxes(
        self,
        ids: np.ndarray,
        boxes: np.ndarray,
        colours: np.ndarray,
        scores: np.ndarray,
        labels: Sequence[str],
        statuses: Sequence[str],
        symbols: Sequence[str] | None = None,
        widths: Sequence[float] | None = None,
    ) -> None:
        """Replace every box of the layer with one refresh (not one per property); ``symbols`` and border
        ``widths`` per row (:mod:`midog_viewer._qt.legend`), else the layer's squares and border."""
        ids = np.asarray(ids, dtype=np.int64)
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        centres, sides = boxes_to_points(boxes)
        features = pd.DataFrame(
            {
                "id": ids,
                "score": np.asarray(scores, dtype=np.float32),
                "label": np.asarray(labels, dtype=object),
                "status": np.asarray(statuses, dtype=object),
            }
        )
        layer = self.layer
        with _quiet(layer):
            layer.selected_data = set()
            layer.data = centres
            layer.size = sides
            if len(ids):
                layer.symbol = list(symbols) if symbols is not None else "square"
                layer.border_width = np.asarray(widths, dtype=np.float32) if widths is not None else self.border
                layer.border_color = np.asarray(colours, dtype=np.float32).reshape(-1, 4)
            layer.features = features
            self.ids = ids
            self._boxes = boxes
            self._row_of = {int(i): row for row, i in enumerate(ids)}
        layer.refresh()

    def append_boxes(
        self,
        ids: np.ndarray,
        boxes: np.ndarray,
        colours: np.ndarray,
        scores: np.ndarray,
        labels: Sequence[str],
        statuses: Sequence[str],
    ) -> None:
        """Add boxes after the existing ones (a detection batch arriving)."""
        if len(ids) == 0:
            return
        old = self.layer.features
        self.set_boxes(
            np.concatenate([self.ids, np.asarray(ids, dtype=np.int64)]),
            np.concatenate([self.boxes(), np.asarray(boxes, dtype=np.float32).reshape(-1, 4)]),
            np.concatenate([np.asarray(self.layer.border_color, dtype=np.float32).reshape(-1, 4),
                            np.asarray(colours, dtype=np.float32).reshape(-1, 4)]),
            np.concatenate([old["score"].to_numpy(np.float32), np.asarray(scores, dtype=np.float32)]),
            list(old["label"]) + list(labels),
            list(old["status"]) + list(statuses),
            [str(symbol) for symbol in np.atleast_1d(self.layer.symbol)][: len(self.ids)] + ["square"] * len(ids),
        )

    def boxes(self) -> np.ndarray:
        """The layer's boxes as level-0 ``(x1, y1, x2, y2)``, in row order."""
        return self._boxes

    def recolour(self, object_ids: Sequence[int], colours: np.ndarray, statuses: Sequence[str]) -> None:
        """Change the status and border colour of a few rows without re-uploading the whole layer."""
        rows = [self._row_of[int(i)] for i in object_ids if int(i) in self._row_of]
        if not rows:
            return
        keep = [k for k, i in enumerate(object_ids) if int(i) in self._row_of]
        colours = np.asarray(colours, dtype=np.float32).reshape(-1, 4)[keep]
        statuses = [statuses[k] for k in keep]
        layer = self.layer
        status_column = layer.features.columns.get_loc("status")
        layer.features.iloc[rows, status_column] = statuses
        if not _write_rows_in_place(layer, np.asarray(rows), colours):
            border = np.array(layer.border_color, dtype=np.float32)
            border[rows] = colours
            layer.border_color = border


@contextlib.contextmanager
def _quiet(layer: Points):
    """Hold back napari's events and refresh while several properties change, so the layer is sliced and
    uploaded once (by the ``refresh`` that follows) and never drawn half-updated."""
    block = getattr(layer, "_block_refresh", None)
    with (
        block() if block is not None else contextlib.nullcontext(),
        layer.events.blocker_all(),
        layer._border.events.blocker_all(),
        layer._face.events.blocker_all(),
    ):
        yield


def _drawn_by(layer: Points):
    """The vispy layer that draws ``layer``, found among the layer's event subscribers (napari connects it there).

    Not through ``viewer.window._qt_viewer``: napari hands a plugin's dock a proxy of the viewer, on which that
    private attribute warns (a FutureWarning on every decision) and goes away in napari 0.10.
    """
    for callback in layer.events.set_data.callbacks:
        owner = callback[0]() if isinstance(callback, tuple) and callable(callback[0]) else None
        if owner is not None and hasattr(getattr(owner, "node", None), "points_markers"):
            return owner
    return None


def _write_rows_in_place(layer: Points, rows: np.ndarray, colours: np.ndarray) -> bool:
    """Write border colours of ``rows`` into napari's table and the vispy buffer; False if this napari has no such path.

    napari's public setter re-slices and re-uploads every point; for one decision among 100,000 boxes
    that costs seconds, while the rows themselves are a few bytes of the vertex buffer.
    """
    visual = _drawn_by(layer)
    if visual is None:
        return False
    try:
        markers = visual.node.points_markers
        buffer_rows = markers._data
        vbo = markers._vbo
        colour_table = layer._border.colors
        view_indices = np.asarray(layer._view_indices)
    except (AttributeError, KeyError):
        return False
    if len(buffer_rows) != len(view_indices) or len(colour_table) != len(layer.data):
        return False
    colour_table[rows] = colours
    positions = np.searchsorted(view_indices, rows)
    shown = (positions < len(view_indices)) & (view_indices[np.minimum(positions, len(view_indices) - 1)] == rows)
    for position, colour in zip(positions[shown], colours[shown]):
        buffer_rows["a_fg_color"][position] = colour
        vbo.set_subdata(buffer_rows[position : position + 1], offset=int(position))
    markers.update()
    return True


class ReviewOverlay:
    """The three box layers of one slide: predictions, hard-negative predictions (dim, hidden) and ground truth."""

    def __init__(
        self,
        viewer,
        name: str,
        *,
        scale: Sequence[float] = (1.0, 1.0),
        translate: Sequence[float] = (0.0, 0.0),
        units: Sequence | None = None,
    ) -> None:
        self.viewer = viewer
        self.name = name
        self._placement = {"scale": tuple(scale), "translate": tuple(translate), "units": units}
        self.predictions = BoxLayer(viewer, f"{name} detections", **self._placement)
        self.hard_negatives = BoxLayer(
            viewer, f"{name} hard negatives", opacity=0.45, visible=False, **self._placement
        )
        self.ground_truth: BoxLayer | None = None
        self.selection = Points(
            np.zeros((0, 2), dtype=np.float32), name=f"{name} selected", symbol="square",
            face_color="transparent", border_color=SELECTION_COLOUR, border_width=0.08,
            border_width_is_relative=True, canvas_size_limits=(MIN_SCREEN_PX * SELECTION_MARGIN, 10000), **self._placement,
        )
        viewer.add_layer(self.selection)
        #: The outer frames of atypical mitotic figures (drawing only: clicks and keys go to the box layers).
        self.atypical = Points(
            np.zeros((0, 2), dtype=np.float32), name=f"{name} atypical", symbol="square", face_color="transparent",
            border_width=ATYPICAL_BORDER, border_width_is_relative=True,
            canvas_size_limits=(MIN_SCREEN_PX * ATYPICAL_MARGIN, 10000), **self._placement,
        )
        viewer.add_layer(self.atypical)
        viewer.layers.selection.active = self.predictions.layer

    def show_atypical(self, boxes: np.ndarray, colours: np.ndarray) -> None:
        """Draw the outer frame of each atypical figure's box (level-0 xyxy) in its colour."""
        centres, sides = boxes_to_points(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
        with _quiet(self.atypical):
            self.atypical.data = centres
            self.atypical.size = sides * ATYPICAL_MARGIN
            if len(centres):
                self.atypical.border_color = np.asarray(colours, dtype=np.float32).reshape(-1, 4)
        self.atypical.refresh()

    def box_layers(self) -> list[BoxLayer]:
        """The layers that exist, predictions first."""
        layers = [self.predictions, self.hard_negatives]
        return layers + ([self.ground_truth] if self.ground_truth is not None else [])

    def ensure_ground_truth(self) -> BoxLayer:
        """The white ground-truth layer, made when the first annotations arrive."""
        if self.ground_truth is None:
            self.ground_truth = BoxLayer(self.viewer, f"{self.name} ground truth", border=ANNOTATION_BORDER,
                                         **self._placement)
            layers = self.viewer.layers
            # below the predictions, so a yellow box on a white one stays visible
            layers.move(layers.index(self.ground_truth.layer), layers.index(self.predictions.layer))
            layers.selection.active = self.predictions.layer
        return self.ground_truth

    def layer_of(self, object_id: int) -> BoxLayer | None:
        """The layer holding an object, if any."""
        for box_layer in self.box_layers():
            if box_layer.row_of(object_id) is not None:
                return box_layer
        return None

    def recolour(self, object_ids: Sequence[int], colours: np.ndarray, statuses: Sequence[str]) -> None:
        """Recolour objects wherever they are drawn."""
        for box_layer in self.box_layers():
            box_layer.recolour(object_ids, colours, statuses)

    def select(self, object_id: int | None) -> None:
        """Frame one object with a cyan square a little larger than its box (napari's own selection
        outline shows only in the Points select mode, and the reviewer works in pan/zoom)."""
        box_layer = None if object_id is None else self.layer_of(object_id)
        if box_layer is None:
            self.selection.data = np.zeros((0, 2), dtype=np.float32)
            return
        centres, sides = boxes_to_points(box_layer.boxes()[box_layer.row_of(object_id)])
        with _quiet(self.selection):
            self.selection.data = centres
            self.selection.size = sides * SELECTION_MARGIN
        self.selection.refresh()

    def remove(self) -> None:
        """Take the overlay's layers out of the viewer."""
        for layer in [box_layer.layer for box_layer in self.box_layers()] + [self.selection, self.atypical]:
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)


_HIDDEN = (0.0, 0.0, 0.0, 0.0)
#: What the dock says when napari's own point tools try to change a box layer (the edit is taken back).
_REFUSED = {
    "removed": "napari's Delete does not judge a box, so it is back: select it and press R to reject it.",
    "added": "Boxes are not added with napari's point tool: Shift+click adds a missed mitosis (stored).",
    "changed": "Boxes do not move: it is back where it was found.",
}


def rgba_for(status: str) -> tuple[float, float, float, float]:
    """Border colour of a status: the review core's colour, transparent for deleted objects."""
    return _HIDDEN if status == Status.DELETED.value else RGBA[colour_for(status)]


def _colours(statuses) -> np.ndarray:
    return np.array([rgba_for(s) for s in statuses], dtype=np.float32).reshape(-1, 4)


class OverlayPainter:
    """Keeps ``overlay`` equal to ``session`` at the score ``threshold()``; ``evaluating()`` says whether boxes
    are coloured by evaluation against ground truth (TP yellow, FP red) rather than by review status.

    ``on_new_layer`` is called with each box layer made later (the ground-truth one), for the dock's keys.
    Edits made with napari's own tools (Delete, add or move points) would change the screen and not the store:
    they are taken back and ``say`` tells why.
    """

    def __init__(self, overlay: ReviewOverlay, session: ReviewSession, threshold: Callable[[], float],
                 evaluating: Callable[[], bool], on_new_layer: Callable[[BoxLayer], None],
                 say: Callable[[str], None] = lambda _text: None) -> None:
        self.overlay, self.session = overlay, session
        self._threshold, self._evaluating, self._on_new_layer, self._say = threshold, evaluating, on_new_layer, say
        session.events.objects_changed.connect(self._on_change)
        for box_layer in overlay.box_layers():
            box_layer.layer.events.data.connect(self._on_napari_edit)

    def _on_napari_edit(self, event) -> None:
        """A box deleted, added or moved with napari's tools: refused (redrawn from the store), and why."""
        why = _REFUSED.get(str(event.action))
        if why is not None:
            self._say(why)
            QTimer.singleShot(0, self.rebuild)  # after napari has finished its own edit

    def detach(self) -> None:
        self.session.events.objects_changed.disconnect(self._on_change)

    def evaluation_colours(self) -> bool:
        return self._evaluating() and self.session.has_ground_truth()

    def _statuses(self) -> np.ndarray:
        """The status each row is drawn with: review status, or evaluation status in evaluation mode."""
        statuses = self.session.table.status.copy()
        if self.evaluation_colours():
            _, evaluated = self.session.evaluation(self._threshold())
            for row, key in enumerate(self.session.keys.tolist()):
                statuses[row] = evaluated.get(key, statuses[row])
        return statuses

    def rebuild(self) -> None:
        """Redraw every box (slide bound, threshold or colour mode changed, annotations imported)."""
        session, overlay = self.session, self.overlay
        t = session.table
        statuses = self._statuses()
        shown = session.visible_mask(self._threshold())
        hard_negative = session.is_hard_negative_prediction()
        annotation = t.kind != DETECTION
        parts = (
            (overlay.predictions, shown & ~hard_negative & ~annotation),
            (overlay.hard_negatives, shown & hard_negative),
        )
        if annotation.any():
            made = overlay.ground_truth is None
            ground_truth = overlay.ensure_ground_truth()
            if made:
                ground_truth.layer.events.data.connect(self._on_napari_edit)
                self._on_new_layer(ground_truth)
            parts += ((ground_truth, annotation & shown),)
        for box_layer, mask in parts:
            colours, symbols, widths = _colours(statuses[mask]), None, None
            if box_layer is overlay.ground_truth:  # hand-added, truth mitosis, truth look-alike: each its own look
                colours = annotation_colours(colours, t.source[mask], t.label[mask])
                looks = [annotation_look(s, lab) for s, lab in zip(t.source[mask], t.label[mask])]
                symbols, widths = [look.symbol for look in looks], [look.border for look in looks]
            box_layer.set_boxes(session.keys[mask], t.boxes[mask], colours, t.score[mask],
                                list(t.label[mask]), list(statuses[mask]), symbols, widths)
        self._draw_atypical(statuses)

    def _draw_atypical(self, statuses: np.ndarray | None = None) -> None:
        """The atypical figures' outer frames: shown mitotic figures whose subtype is atypical."""
        t = self.session.table
        statuses = t.status if statuses is None else statuses
        mask = (self.session.visible_mask(self._threshold()) & (t.atypical == 1) & (t.label == MITOTIC_FIGURE)
                & ~self.session.is_hard_negative_prediction())
        self.overlay.show_atypical(t.boxes[mask], _colours(statuses[mask]))

    def _on_change(self, change: ObjectsChanged) -> None:
        if change.reloaded:
            self.rebuild()
        elif len(change.added):  # in evaluation colours too: the dock redraws once the run ends
            self._append(change.added)
        elif change.keys and self.evaluation_colours():  # one decision can change several matches
            self.rebuild()
        elif change.keys:
            self._recolour(list(change.keys))

    def _recolour(self, keys: list[int]) -> None:
        if any(self.overlay.layer_of(k) is None for k in keys):  # e.g. an undo brought back a box the threshold hid
            self.rebuild()
            return
        statuses = [self.session.table.status[self.session.row_of(k)] for k in keys]
        self.overlay.recolour(keys, _colours(statuses), statuses)
        self._draw_atypical()

    def _append(self, keys: np.ndarray) -> None:
        session = self.session
        rows = np.array([session.row_of(k) for k in keys])
        if np.any(session.table.kind[rows] != DETECTION):  # an added mitosis: its layer may not exist yet
            self.rebuild()
            return
        t = session.table.select(rows)
        shown = session.visible_mask(self._threshold())[rows]
        hard_negative = session.is_hard_negative_prediction()[rows]
        for box_layer, mask in ((self.overlay.predictions, shown & ~hard_negative),
                                (self.overlay.hard_negatives, shown & hard_negative)):
            if mask.any():
                box_layer.append_boxes(keys[mask], t.boxes[mask], _colours(t.status[mask]), t.score[mask],
                                       list(t.label[mask]), list(t.status[mask]))
        if np.any(session.table.atypical[rows] == 1):
            self._draw_atypical()
