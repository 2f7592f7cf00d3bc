"""The desktop viewer: napari with the given slides (or the built-in sample) and the review dock."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import napari
from qtpy.QtGui import QGuiApplication

from midog_viewer._qt.opengl import load_triton_before_opengl

#: The dock widget opened beside the slides, as named in ``napari.yaml``.
REVIEW_WIDGET = "Mitosis review"


def fit_to_screen(viewer: napari.Viewer) -> None:
    """Give the window the screen's available area (napari opens at 1090 × 815 whatever the screen)."""
    screen = QGuiApplication.primaryScreen()
    if screen is not None:
        available = screen.availableGeometry()
        viewer.window.set_geometry(available.x(), available.y(), available.width(), available.height())


def open_viewer(paths: Sequence[str] | None, show: bool = True, store=None) -> napari.Viewer:
    """A napari viewer on ``paths`` (each through our lazy reader) or, with none, on the synthetic sample.

    Files go through ``viewer.open(..., plugin="midog-viewer")`` so napari's eager reader, which loads
    a whole slide into memory, is never used. The review dock is added when its widget is installed; ``store``
    (a :class:`~midog_viewer.review.store.ReviewStore`) is the one it writes to, else the per-user database.
    """
    load_triton_before_opengl()
    viewer = napari.Viewer(title="midog-viewer", show=show)
    if paths:
        for path in paths:
            viewer.open(str(path), plugin="midog-viewer")
    else:
        viewer.open_sample("midog-viewer", "synthetic-hpf")
    viewer.canvas.overlays.scale_bar.visible = True
    if store is not None:
        from midog_viewer._qt.review_widget import ReviewWidget

        viewer.window.add_dock_widget(ReviewWidget(viewer, store=store), name=REVIEW_WIDGET, area="right")
    elif importlib.util.find_spec("midog_viewer._qt.review_widget") is not None:
        viewer.window.add_plugin_dock_widget("midog-viewer", REVIEW_WIDGET)
    fit_to_screen(viewer)
    return viewer


def review_dock(viewer: napari.Viewer):
    """The viewer's open Mitosis review dock, or None."""
    from midog_viewer._qt.review_widget import ReviewWidget

    return next((w for w in viewer.window.dock_widgets.values() if isinstance(w, ReviewWidget)), None)


def run_viewer(paths: Sequence[str] | None) -> None:
    """Open the viewer (see :func:`open_viewer`) and run napari's event loop until the window closes."""
    open_viewer(paths)
    napari.run()
