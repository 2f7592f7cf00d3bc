"""What the review dock draws for one slide, and the camera geometry of its image layer.

Made when a slide is bound and removed with it: the box layers (kept equal to the session by the
:class:`~midog_viewer._qt.overlay.OverlayPainter`), the HPF layers, and conversions between the
camera, the screen and the slide's level-0 pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from napari.layers import Image

from midog_viewer._qt.hpf_layers import HpfLayers
from midog_viewer._qt.overlay import OverlayPainter, ReviewOverlay
from midog_viewer.review.navigation import step_zoom, view_region
from midog_viewer.review.session import ReviewSession


class SlideView:
    """The layers of one slide under review; ``bind_keys(layer)`` gives each new layer the review keys, ``say``
    puts a line in the dock's status line."""

    def __init__(self, viewer, layer: Image, session: ReviewSession, threshold: Callable[[], float],
                 evaluating: Callable[[], bool], bind_keys: Callable, say: Callable[[str], None]) -> None:
        self.viewer, self.layer, self.session = viewer, layer, session
        self.slide = layer.metadata["slide"]
        placement = {"scale": tuple(layer.scale[-2:]), "translate": tuple(layer.translate[-2:]),
                     "units": layer.units[-2:]}
        self.overlay = ReviewOverlay(viewer, Path(self.slide.path).stem, **placement)
        for box_layer in self.overlay.box_layers():
            bind_keys(box_layer.layer)
        bind_keys(self.overlay.selection)
        self.painter = OverlayPainter(self.overlay, session, threshold, evaluating,
                                      lambda box_layer: bind_keys(box_layer.layer), say)
        self.hpf_layers = HpfLayers(viewer, session, placement, self.keep_boxes_active)
        self.removed = False

    def keep_boxes_active(self) -> None:
        """Make the detections layer the active one again (a new Shapes layer would take the review keys)."""
        self.viewer.layers.selection.active = self.overlay.predictions.layer

    def visible_region(self) -> tuple[int, int, int, int] | None:
        """The level-0 region on screen, from the camera, the canvas size and the slide layer's scale."""
        camera = self.viewer.scene.camera
        return view_region(camera.center, camera.zoom, tuple(self.viewer.canvas.size), tuple(self.layer.scale[-2:]),
                           (self.slide.width, self.slide.height), tuple(self.layer.translate[-2:]))

    def to_level0(self, position) -> tuple[float, float]:
        """Level-0 ``(x, y)`` of a world position (a mouse event's)."""
        row, col = self.layer.world_to_data(position)[-2:]
        return float(col), float(row)

    def centre_on(self, box: np.ndarray) -> None:
        """Centre the camera on a level-0 box, zooming in to the fixed physical field of
        :func:`~midog_viewer.review.navigation.step_zoom` (0.25 µm per screen pixel; one screen pixel per
        level-0 pixel when the pixel size is unknown); a view zoomed in further stays as it is."""
        camera = self.viewer.scene.camera
        camera.center = tuple(self.layer.data_to_world(((box[1] + box[3]) / 2, (box[0] + box[2]) / 2))[-2:])
        field_zoom = step_zoom(self.session.mpp, self.layer.scale[-1])
        if camera.zoom < field_zoom:
            camera.zoom = field_zoom

    def shows_stored(self, layer) -> bool:
        """Whether ``layer`` draws what the store holds (boxes, the selection frame, atypical frames, marked
        HPFs): deleting it in napari's layer list would hide objects that still count. False once
        :meth:`remove` began (its own removals)."""
        if self.removed:
            return False
        overlay = self.overlay
        drawn = [box_layer.layer for box_layer in overlay.box_layers()] + [overlay.selection, overlay.atypical]
        return any(layer is mine for mine in drawn + [self.hpf_layers.fields] if mine is not None)

    def remove(self) -> None:
        """Take the slide's layers out of the viewer and stop following its session."""
        self.removed = True
        self.painter.detach()
        self.overlay.remove()
        self.hpf_layers.remove()
