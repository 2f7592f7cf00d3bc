"""File-menu entries contributed through ``napari.yaml``: thin calls into the Mitosis review dock."""

from __future__ import annotations

from typing import TYPE_CHECKING

from midog_viewer._qt.review_widget import ReviewWidget
from midog_viewer._qt.viewer import review_dock as review_dock_of

if TYPE_CHECKING:
    import napari

PLUGIN = "midog-viewer"
REVIEW_DOCK = "Mitosis review"


def review_dock(viewer: napari.Viewer) -> ReviewWidget:
    """The viewer's Mitosis review dock, docked first if it is not open yet."""
    found = review_dock_of(viewer)
    if found is None:
        _, found = viewer.window.add_plugin_dock_widget(PLUGIN, REVIEW_DOCK)
    return found


def import_annotations(viewer: napari.Viewer) -> None:
    """File ▸ IO utilities ▸ "Import mitosis annotations…": the review dock's import, from the File menu."""
    review_dock(viewer)._choose_import()
