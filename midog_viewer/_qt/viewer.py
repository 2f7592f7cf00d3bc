"""The desktop viewer: napari with the given slides (or the built-in sample) and the review dock."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence

import napari

#: The dock widget opened beside the slides, as named in ``napari.yaml``.
REVIEW_WIDGET = "Mitosis review"


def load_triton_before_opengl() -> None:
    """Import triton (shipped with CUDA builds of torch) before napari creates its OpenGL context.

    triton and Mesa's llvmpipe each bring their own LLVM; when torch imports triton lazily after the GL
    context exists (on first use of ``torchvision.ops``, e.g. by the review dock's detector) the process
    segfaults. Loaded first, both work. See :func:`keep_triton_out` for a viewer started some other way.
    """
    if importlib.util.find_spec("triton") is not None:
        importlib.import_module("triton")


def keep_triton_out() -> None:
    """Make ``import triton`` fail (ImportError) unless it was loaded before napari's OpenGL context.

    When the dock is opened from a napari started some other way it is too late for
    :func:`load_triton_before_opengl`, so torch carries on without triton, which eager inference does not need.
    """
    if "triton" not in sys.modules:
        sys.modules["triton"] = None


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
    return viewer


def review_dock(viewer: napari.Viewer):
    """The viewer's open Mitosis review dock, or None."""
    from midog_viewer._qt.review_widget import ReviewWidget

    return next((w for w in viewer.window.dock_widgets.values() if isinstance(w, ReviewWidget)), None)


def run_viewer(paths: Sequence[str] | None) -> None:
    """Open the viewer (see :func:`open_viewer`) and run napari's event loop until the window closes."""
    open_viewer(paths)
    napari.run()
