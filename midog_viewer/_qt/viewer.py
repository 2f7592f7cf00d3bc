"""The desktop viewer: napari with the given slides (or the built-in sample) and the review dock."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import napari

#: The dock widget opened beside the slides, as named in ``napari.yaml``.
REVIEW_WIDGET = "Mitosis review"


def _load_triton_before_opengl() -> None:
    """Import triton (shipped with CUDA builds of torch) before napari creates its OpenGL context.

    triton and Mesa's llvmpipe each bring their own LLVM; when torch imports triton lazily after the GL
    context exists (on first use of ``torchvision.ops``, e.g. by the review dock's detector) the process
    segfaults. Loaded first, both work.
    """
    if importlib.util.find_spec("triton") is not None:
        importlib.import_module("triton")


def open_viewer(paths: Sequence[str] | None, show: bool = True) -> napari.Viewer:
    """A napari viewer on ``paths`` (each through our lazy reader) or, with none, on the synthetic sample.

    Files go through ``viewer.open(..., plugin="midog-viewer")`` so napari's eager reader, which loads
    a whole slide into memory, is never used. The review dock is added when its widget is installed.
    """
    _load_triton_before_opengl()
    viewer = napari.Viewer(title="midog-viewer", show=show)
    if paths:
        for path in paths:
            viewer.open(str(path), plugin="midog-viewer")
    else:
        viewer.open_sample("midog-viewer", "synthetic-hpf")
    viewer.canvas.overlays.scale_bar.visible = True
    if importlib.util.find_spec("midog_viewer._qt.review_widget") is not None:
        viewer.window.add_plugin_dock_widget("midog-viewer", REVIEW_WIDGET)
    return viewer


def run_viewer(paths: Sequence[str] | None) -> None:
    """Open the viewer (see :func:`open_viewer`) and run napari's event loop until the window closes."""
    open_viewer(paths)
    napari.run()
