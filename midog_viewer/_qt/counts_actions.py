"""What the counts panel's buttons do: the HPF grid, marking a field, the hotspot, a missing pixel size, export
and import.

Each action works on the review dock's open slide and says in napari's notification area why it cannot act.
File dialogs are apart from the work, so scripts and tests call :func:`export_slide` and :func:`import_into`.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QFileDialog, QWidget

from midog_viewer._qt import notify
from midog_viewer._qt.notify import NO_SLIDE, reports_errors
from midog_viewer.review.counts import write_counts_csv
from midog_viewer.review.session import ReviewSession

IMPORT_FILTER = "Annotations (*.json *.geojson *.sqlite *.db *.csv)"


def ask_export_path(parent: QWidget, slide_path: str | Path, fmt: str, file_filter: str) -> str | None:
    """A save dialog suggesting ``<slide>-counts.csv`` or ``<slide>-<format>.<ext>``; None when cancelled."""
    stem = Path(slide_path).stem
    suggestion = f"{stem}-counts.csv" if fmt == "counts" else f"{stem}-{fmt}{file_filter.split('*')[-1].rstrip(')')}"
    path, _ = QFileDialog.getSaveFileName(parent, "Export", suggestion, file_filter)
    return path or None


def ask_import_path(parent: QWidget) -> str | None:
    path, _ = QFileDialog.getOpenFileName(parent, "Import annotations", "", IMPORT_FILTER)
    return path or None


def export_slide(session: ReviewSession, fmt: str, path: str | Path, hpf_mm2: float) -> Path:
    """Write the slide's counts CSV (``fmt="counts"``) or its objects in an annotation format."""
    from midog_viewer.formats import atomic
    from midog_viewer.review.exporting import export_store

    path = Path(path)
    if fmt == "counts":  # atomic, and never over the review database (export_store guards the rest)
        rows = [session.counts(None, hpf_mm2, use_drawn=True)]
        atomic.replace_file(path, lambda temp: write_counts_csv(temp, rows), atomic.store_files(session.store.path))
    else:
        export_store(session.store, fmt, path, slide_ids=[session.slide_id])
    return path


def import_into(session: ReviewSession, path: str | Path, image_name: str, all_slides: bool = False) -> str:
    """Import an annotation file (MIDOG JSON, SlideRunner, GeoJSON, CSV): only the labels of the open image
    (matched by file name), or with ``all_slides`` every image's; the session reloads (its views redraw).
    Returns the one-line summary: what was matched to the open slide and what was not."""
    from midog_viewer.review.importing import import_file, summary_line

    slide = None if all_slides else session.store.slide(session.slide_id)
    summary = import_file(session.store, path, image_name=image_name, slide=slide)
    session.reload()
    line = summary_line(summary)
    return line + (" (Import all slides… brings them in)." if summary.other_objects else ".")


class CountsActions:
    """The counts panel's actions on ``dock`` (a :class:`~midog_viewer._qt.review_widget.ReviewWidget`)."""

    def __init__(self, dock) -> None:
        self.dock = dock
        panel = dock.counts_panel
        panel.export_requested.connect(self.choose_export)
        panel.import_requested.connect(self.choose_import)
        panel.import_all_requested.connect(lambda: self.choose_import(all_slides=True))
        panel.hotspot_requested.connect(self.go_to_hotspot)
        panel.mark_hpf_requested.connect(self.mark_current_hpf)
        panel.grid_toggled.connect(self.show_hpf_grid)
        panel.hpf_area_changed.connect(lambda _: self._on_hpf_area())
        panel.pixel_size_given.connect(self.set_pixel_size)

    @property
    def hpf_mm2(self) -> float:
        return self.dock.counts_panel.hpf_area.value()

    def _on_hpf_area(self) -> None:
        layers = self.dock.hpf_layers
        if layers is not None and layers.grid is not None:
            self.show_hpf_grid(True)
        self.dock.schedule_counts()

    @reports_errors
    def show_hpf_grid(self, visible: bool) -> None:
        """Draw (or remove) the grid of HPFs the whole-image counts use."""
        if self.dock.hpf_layers is not None:
            self.dock.hpf_layers.show_grid(visible, self.hpf_mm2)

    def current_hpf(self) -> tuple[float, float, float, float] | None:
        """The HPF-sized field centred on the view centre (level-0 px); None without a slide or a pixel size."""
        if self.dock.hpf_layers is None:
            return None
        return self.dock.hpf_layers.current(self.dock.visible_region(), self.hpf_mm2)

    @reports_errors
    def mark_current_hpf(self) -> None:
        """Store the HPF centred on the view as a counted field (the whole-image counts then use marked fields)."""
        session = self.dock.session
        if session is None:
            notify.show_info(NO_SLIDE)
            return
        hpf = self.current_hpf()
        if hpf is None:
            notify.show_error("The slide has no pixel size, so an HPF has no size in pixels.")
            return
        session.mark_hpf(hpf)

    @reports_errors
    def set_pixel_size(self, mpp: float) -> None:
        """Record the µm per pixel of a slide whose file gives none (a PNG or JPEG frame), in the review store:
        HPFs, per-mm² counts and the hotspot get a size, and detection resamples to the model's spacing."""
        dock = self.dock
        if dock.session is None:
            notify.show_info(NO_SLIDE)
            return
        dock.session.set_mpp(mpp)  # the store refuses a pixel size that is not a positive number
        dock.slide.mpp = float(mpp)
        dock.counts_panel.show_pixel_size(mpp)
        self._on_hpf_area()
        dock.status.setText(f"Pixel size of {Path(dock.slide.path).name} recorded: {mpp:g} µm/px.")

    @reports_errors
    def go_to_hotspot(self) -> None:
        """Centre the view on the 10-HPF window with the most mitoses."""
        dock = self.dock
        if dock.session is None or not dock.session.mpp:
            notify.show_error("The slide has no pixel size, so there is no HPF to find a hotspot with.")
            return
        hotspot = dock.hpf_layers.go_to_hotspot(dock.slide_layer, self.hpf_mm2)
        if hotspot is not None:
            dock.status.setText(f"Hotspot: {hotspot.mitoses} mitoses in {hotspot.area_mm2:.2f} mm².")

    def choose_export(self, fmt: str, file_filter: str) -> None:
        if self.dock.session is None:
            notify.show_error("Open a slide before exporting.")
            return
        path = ask_export_path(self.dock, self.dock.slide.path, fmt, file_filter)
        if path:
            self.export(fmt, path)

    @reports_errors
    def export(self, fmt: str, path: str | Path) -> Path | None:
        """Write this slide's counts CSV (``fmt="counts"``) or its objects in an annotation format."""
        if self.dock.session is None:
            return None
        written = export_slide(self.dock.session, fmt, path, self.hpf_mm2)
        notify.show_info(f"Exported {written.name}.")
        return written

    def choose_import(self, all_slides: bool = False) -> None:
        path = ask_import_path(self.dock)
        if path:
            self.import_annotations(path, all_slides=all_slides)

    @reports_errors
    def import_annotations(self, path: str | Path, all_slides: bool = False) -> str | None:
        """Import an annotation file (MIDOG JSON, SlideRunner, GeoJSON, CSV): this image's labels (matched by
        file name), or every image's with ``all_slides``; the summary goes to the notification area and back."""
        if self.dock.session is None:
            notify.show_error("Open the image the annotations belong to before importing them.")
            return None
        line = import_into(self.dock.session, path, Path(self.dock.slide.path).name, all_slides)
        notify.show_info(line)
        return line
