"""The review dock's high-power-field layers: the grid the whole-image counts use and the fields marked by hand.

The "marked HPFs" Shapes layer is where fields are also drawn, moved, resized and deleted with napari's shape
tools; each finished edit replaces the slide's stored fields in one transaction
(:meth:`~midog_viewer.review.session.ReviewSession.replace_hpfs`), and the layer redraws from the session's
``hpfs_changed`` event, so what is on screen is what the store holds.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Shapes

from collections.abc import Callable
from typing import NamedTuple

from midog_viewer.review.counts import hpf_size_px
from midog_viewer.review.session import ReviewSession
from midog_viewer.review.store import HPFRegion


class _Field(NamedTuple):
    x: float
    y: float
    w: float
    h: float


def bounding_rectangle(vertices: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, w, h) of a shape's (row, column) vertices."""
    (y0, x0), (y1, x1) = np.min(vertices, axis=0)[-2:], np.max(vertices, axis=0)[-2:]
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


#: Outline colours of the field the "Current HPF" row counts and of the hotspot window (the marked HPFs are
#: magenta, the grid dim cyan, the selected box a small cyan frame).
CURRENT_HPF_COLOUR = "cyan"
HOTSPOT_COLOUR = "orange"
OUTLINES_NAME = "current HPF (cyan) and hotspot (orange)"


def _rectangles(fields) -> list[np.ndarray]:
    return [np.array([[f.y, f.x], [f.y + f.h, f.x + f.w]]) for f in fields]


class HpfLayers:
    """The grid and marked-field layers of one slide, drawn in its level-0 pixels (``placement``).

    ``after_adding`` is called each time a layer is added (the dock makes its box layer active again, so the
    review keys are not taken by the Shapes layer's own).
    """

    def __init__(self, viewer, session: ReviewSession, placement: dict, after_adding: Callable[[], None]) -> None:
        self.viewer = viewer
        self.session = session
        self.placement = placement
        self.after_adding = after_adding
        self.grid: Shapes | None = None
        self.fields: Shapes | None = None
        self.outlines: Shapes | None = None
        self._outlined: list[tuple[float, float, float, float]] = []
        self._editing = False
        session.events.hpfs_changed.connect(self._on_hpfs_changed)
        self.show_fields()

    def show_grid(self, visible: bool, hpf_mm2: float) -> None:
        """Draw (or remove) the grid of HPFs the whole-image counts use."""
        self._remove(self.grid)
        self.grid = None
        if not visible or not self.session.mpp:
            return
        fields = self.session.counts(None, hpf_mm2, use_drawn=False).fields
        self.grid = self.viewer.add_shapes(
            _rectangles(fields), shape_type="rectangle", edge_color="cyan", face_color="transparent", edge_width=4,
            opacity=0.5, name="HPF grid", **self.placement,
        )
        self.after_adding()

    def current(self, view: tuple[int, int, int, int] | None, hpf_mm2: float) -> tuple[float, float, float, float] | None:
        """The HPF-sized field centred on ``view`` (level-0 px); None without a view or a pixel size."""
        if view is None or not self.session.mpp:
            return None
        w, h = hpf_size_px(hpf_mm2, self.session.mpp)
        cx, cy = view[0] + view[2] / 2, view[1] + view[3] / 2
        return (cx - w / 2, cy - h / 2, w, h)

    def go_to_hotspot(self, slide_layer, hpf_mm2: float):
        """Centre and zoom the view on the 10-HPF window with the most mitoses; return it (None: no mitoses)."""
        hotspot = self.session.counts(None, hpf_mm2).hotspot
        if hotspot is None:
            return None
        camera = self.viewer.scene.camera
        camera.center = tuple(slide_layer.data_to_world((hotspot.y + hotspot.h / 2, hotspot.x + hotspot.w / 2))[-2:])
        canvas_h, canvas_w = self.viewer.canvas.size
        scale = float(slide_layer.scale[-1])
        camera.zoom = min(canvas_w / (hotspot.w * scale), canvas_h / (hotspot.h * scale))
        return hotspot

    def outline(self, current: tuple[float, float, float, float] | None, hotspot) -> None:
        """Outline the current HPF (cyan; its part inside the image) and the hotspot window (orange, when it
        holds a mitosis) in one Shapes layer, so the user sees what the counts rows count; redrawn only when
        either moved."""
        if current is not None:  # only the part inside the image counts, so only that part is outlined
            x, y, w, h = current
            x0, y0 = max(0.0, x), max(0.0, y)
            x1, y1 = min(float(self.session.width), x + w), min(float(self.session.height), y + h)
            current = (x0, y0, x1 - x0, y1 - y0) if x1 > x0 and y1 > y0 else None
        regions = [(tuple(current), CURRENT_HPF_COLOUR)] if current is not None else []
        if hotspot is not None and hotspot.mitoses > 0:
            regions.append(((hotspot.x, hotspot.y, hotspot.w, hotspot.h), HOTSPOT_COLOUR))
        wanted = [region for region, _ in regions]
        if wanted == self._outlined and (self.outlines is not None or not regions):
            return
        self._outlined = wanted
        self._remove(self.outlines)
        self.outlines = None
        if not regions:
            return
        self.outlines = self.viewer.add_shapes(
            _rectangles([_Field(*region) for region in wanted]), shape_type="rectangle",
            edge_color=[colour for _, colour in regions], face_color="transparent", edge_width=4,
            name=OUTLINES_NAME, **self.placement,
        )
        self.after_adding()

    def show_fields(self) -> None:
        """(Re)make the editable layer of the HPFs marked on this slide."""
        self._remove(self.fields)
        self.fields = self.viewer.add_shapes(
            _rectangles(self.session.hpf_regions()) or None, shape_type="rectangle", edge_color="magenta",
            face_color="transparent", edge_width=6, name="marked HPFs", **self.placement,
        )
        self.fields.current_edge_color = "magenta"
        self.fields.current_face_color = "transparent"
        self.fields.events.data.connect(self._on_edited)
        self.after_adding()

    def _on_edited(self, event) -> None:
        """Store the marked HPFs as the layer now shows them (each shape counts by its bounding rectangle)."""
        if event.action not in ("added", "removed", "changed"):
            return
        self._editing = True  # the layer already shows the edit: no redraw inside its own event
        try:
            self.session.replace_hpfs([bounding_rectangle(shape) for shape in self.fields.data])
        finally:
            self._editing = False

    def _on_hpfs_changed(self, stored: list[HPFRegion]) -> None:
        """Redraw when the store's fields differ from the layer's (a field marked with the button)."""
        if self._editing:
            return
        shown = sorted(bounding_rectangle(shape) for shape in self.fields.data)
        wanted = sorted((f.x, f.y, f.w, f.h) for f in stored)
        if len(shown) == len(wanted) and np.allclose(np.reshape(shown, (-1, 4)), np.reshape(wanted, (-1, 4)), atol=0.5):
            return
        self.show_fields()

    def remove(self) -> None:
        """Take both layers out of the viewer and stop following the session."""
        self.session.events.hpfs_changed.disconnect(self._on_hpfs_changed)
        self._remove(self.grid)
        self._remove(self.fields)
        self._remove(self.outlines)
        self.grid = self.fields = self.outlines = None

    def _remove(self, layer) -> None:
        if layer is not None and layer in self.viewer.layers:
            self.viewer.layers.remove(layer)
