"""The review dock's counts, counted fields (HPFs), export and import: a part of :class:`ReviewWidget`.

Kept apart so the dock's module holds the model, detection and review keys; these methods use the widget's
session, store, overlay and panels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QFileDialog
from superqt.utils import thread_worker

from midog_viewer._qt import notify
from midog_viewer._qt.notify import NO_SLIDE
from midog_viewer._qt.notify import reports_errors as _reports_errors
from midog_viewer._qt.review_session import ReviewSession
from midog_viewer.review.counts import hpf_size_px, write_counts_csv
from midog_viewer.review.store import ReviewStore


def _bounding_rectangle(vertices: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, w, h) of a shape's (row, column) vertices."""
    (y0, x0), (y1, x1) = np.min(vertices, axis=0)[-2:], np.max(vertices, axis=0)[-2:]
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def _figures(session: ReviewSession, reader: ReviewStore, view, hpf, hpf_mm2: float, threshold: float) -> dict:
    """Everything the counts panel shows, read through ``reader`` (its own connection: in WAL mode it
    never blocks the decisions the GUI thread writes meanwhile). Runs in a worker thread."""

    def totals(region):
        counts = session.counts(region, hpf_mm2, store=reader)
        return {**counts.totals, "pending": session.pending_count(threshold, region)}

    return {
        "session": session,
        "view": None if view is None else totals(view),
        "hpf": None if hpf is None else totals(hpf),
        "image": totals(None),
        # the score uses the HPFs the reviewer marked when there are any, else the hotspot
        "score": session.counts(None, hpf_mm2, use_drawn=True, store=reader),
        "f1": session.evaluation(threshold, view, store=reader)[0] if session.has_ground_truth() else None,
    }


class FieldsAndFiles:
    """Counts, HPFs, export and import of :class:`~midog_viewer._qt.review_widget.ReviewWidget`."""

    # -- counts, HPFs, export, import -----------------------------------------------------------

    def schedule_counts(self) -> None:
        self._counts_timer.start()

    def current_hpf(self) -> tuple[float, float, float, float] | None:
        """The HPF-sized field centred on the view centre (level-0 px)."""
        if self.session is None or not self.session.mpp:
            return None
        w, h = hpf_size_px(self.counts_panel.hpf_area.value(), self.session.mpp)
        view = self.visible_region()
        if view is None:
            return None
        cx, cy = view[0] + view[2] / 2, view[1] + view[3] / 2
        return (cx - w / 2, cy - h / 2, w, h)

    def update_counts(self, wait: bool = False) -> None:
        """Recompute the counts rows, the mitotic score and the live F1 (on a timer after changes).

        The figures are read from the store in a worker thread (counting 100,000 objects takes a second),
        so the keys stay instant; ``wait=True`` computes them in the calling thread.
        """
        if self.session is None:
            return
        if not self.session.mpp:
            for row in ("view", "hpf", "image"):
                self.counts_panel.show_counts(row, None)
            self.counts_panel.show_score(None, "(the slide has no pixel size, so HPFs have no size)")
            return
        if self._counts_worker is not None:  # one at a time; count again when it is done
            self._counts_stale = True
            if not wait:
                return
        # A worker reads through its own connection; counting here uses the main one (a worker may be in flight).
        reader = self.store if wait else self._reader()
        request = (self.session, reader, self.visible_region(), self.current_hpf(), self.counts_panel.hpf_area.value(),
                   self.score_threshold)
        if wait:
            self._show_figures(_figures(*request))
            return
        self._counts_stale = False
        self._counts_worker = thread_worker(_figures, start_thread=False, ignore_errors=True)(*request)
        self._counts_worker.returned.connect(self._show_figures)
        self._counts_worker.errored.connect(lambda exc: notify.show_error(str(exc)))
        self._counts_worker.finished.connect(self._counts_done)
        self._counts_worker.start()

    def _reader(self) -> ReviewStore:
        """A second connection to the review database for the counts worker, opened once."""
        if self._reader_store is None or self._reader_store.path != self.store.path:
            self._reader_store = ReviewStore(self.store.path, self.store.reviewer)
        return self._reader_store

    def _counts_done(self) -> None:
        self._counts_worker = None
        if self._counts_stale:
            self.schedule_counts()

    def _show_figures(self, figures: dict) -> None:
        if figures["session"] is not self.session:  # the slide changed while counting
            return
        for row in ("view", "hpf", "image"):
            self.counts_panel.show_counts(row, figures[row])
        self.counts_panel.show_score(figures["score"])
        self.counts_panel.show_f1(figures["f1"])

    def _on_hpf_area(self) -> None:
        if self._grid_layer is not None:
            self.show_hpf_grid(True)
        self.schedule_counts()

    def _placement(self) -> dict:
        """Scale, offset and units of the slide layer, for layers drawn in its level-0 pixels."""
        layer = self.slide_layer
        return {"scale": tuple(layer.scale[-2:]), "translate": tuple(layer.translate[-2:]), "units": layer.units[-2:]}

    @_reports_errors
    def show_hpf_grid(self, visible: bool) -> None:
        """Draw (or remove) the grid of HPFs the whole-image counts use."""
        if self._grid_layer is not None and self._grid_layer in self.viewer.layers:
            self.viewer.layers.remove(self._grid_layer)
        self._grid_layer = None
        if not visible or self.session is None or not self.session.mpp:
            return
        fields = self.session.counts(None, self.counts_panel.hpf_area.value(), use_drawn=False).fields
        rectangles = [np.array([[f.y, f.x], [f.y + f.h, f.x + f.w]]) for f in fields]
        self._grid_layer = self.viewer.add_shapes(
            rectangles, shape_type="rectangle", edge_color="cyan", face_color="transparent", edge_width=4,
            opacity=0.5, name="HPF grid", **self._placement(),
        )
        self._keep_boxes_active()

    def _show_fields(self) -> None:
        """Draw the HPF rectangles marked on this slide in a layer where HPFs can also be drawn, moved, resized
        and deleted by hand (napari's shape tools); the store follows every finished edit."""
        if self._fields_layer is not None and self._fields_layer in self.viewer.layers:
            self.viewer.layers.remove(self._fields_layer)
        fields = self.session.store.hpf_regions(self.session.slide_id)
        rectangles = [np.array([[f.y, f.x], [f.y + f.h, f.x + f.w]]) for f in fields]
        self._fields_layer = self.viewer.add_shapes(
            rectangles or None, shape_type="rectangle", edge_color="magenta", face_color="transparent", edge_width=6,
            name="marked HPFs", **self._placement(),
        )
        self._fields_layer.current_edge_color = "magenta"
        self._fields_layer.current_face_color = "transparent"
        self._fields_layer.events.data.connect(self._on_fields_edited)
        self._keep_boxes_active()

    @_reports_errors
    def _on_fields_edited(self, event) -> None:
        """Store the marked HPFs as the layer now shows them (each shape counts by its bounding rectangle)."""
        action = getattr(event.action, "value", event.action)
        if action not in ("added", "removed", "changed") or self.session is None:
            return
        store, slide_id = self.session.store, self.session.slide_id
        shown = [_bounding_rectangle(shape) for shape in self._fields_layer.data]
        unmatched = [rect for rect in shown if rect[2] >= 1 and rect[3] >= 1]
        for region in store.hpf_regions(slide_id):
            stored = (region.x, region.y, region.w, region.h)
            match = next((i for i, rect in enumerate(unmatched) if np.allclose(rect, stored, atol=0.5)), None)
            if match is None:
                store.delete_hpf(region.id)
            else:
                unmatched.pop(match)
        for rect in unmatched:
            store.add_hpf(slide_id, rect)
        self.schedule_counts()

    def _keep_boxes_active(self) -> None:
        if self.overlay is not None:
            self.viewer.layers.selection.active = self.overlay.predictions.layer

    @_reports_errors
    def mark_current_hpf(self) -> None:
        """Store the HPF centred on the view as a counted field (the whole-image counts then use marked fields)."""
        if self.session is None:
            notify.show_info(NO_SLIDE)
            return
        hpf = self.current_hpf()
        if hpf is None:
            notify.show_error("The slide has no pixel size, so an HPF has no size in pixels.")
            return
        self.session.store.add_hpf(self.session.slide_id, hpf)
        self._show_fields()
        self.schedule_counts()

    @_reports_errors
    def go_to_hotspot(self) -> None:
        """Centre the view on the 10-HPF window with the most mitoses."""
        if self.session is None or not self.session.mpp:
            notify.show_error("The slide has no pixel size, so there is no HPF to find a hotspot with.")
            return
        hotspot = self.session.counts(None, self.counts_panel.hpf_area.value()).hotspot
        if hotspot is None:
            return
        centre = self.slide_layer.data_to_world((hotspot.y + hotspot.h / 2, hotspot.x + hotspot.w / 2))
        self.viewer.scene.camera.center = tuple(centre[-2:])
        canvas_h, canvas_w = self.viewer.canvas.size
        scale = float(self.slide_layer.scale[-1])
        self.viewer.scene.camera.zoom = min(canvas_w / (hotspot.w * scale), canvas_h / (hotspot.h * scale))
        self.status.setText(f"Hotspot: {hotspot.mitoses} mitoses in {hotspot.area_mm2:.2f} mm².")

    def _choose_export(self, fmt: str, file_filter: str) -> None:
        if self.session is None:
            notify.show_error("Open a slide before exporting.")
            return
        stem = Path(self.slide.path).stem
        suggestion = f"{stem}-counts.csv" if fmt == "counts" else f"{stem}-{fmt}{file_filter.split('*')[-1].rstrip(')')}"
        path, _ = QFileDialog.getSaveFileName(self, "Export", suggestion, file_filter)
        if path:
            self.export(fmt, path)

    @_reports_errors
    def export(self, fmt: str, path: str | Path) -> Path | None:
        """Write this slide's counts CSV (``fmt="counts"``) or its objects in an annotation format."""
        from midog_viewer.formats import atomic
        from midog_viewer.review.exporting import export_store

        if self.session is None:
            return None
        path = Path(path)
        if fmt == "counts":  # atomic, and never over the review database (export_store guards the rest)
            rows = [self.session.counts(None, self.counts_panel.hpf_area.value(), use_drawn=True)]
            atomic.replace_file(path, lambda temp: write_counts_csv(temp, rows), atomic.store_files(self.session.store.path))
        else:
            export_store(self.session.store, fmt, path, slide_ids=[self.session.slide_id])
        notify.show_info(f"Exported {path.name}.")
        return path

    def _choose_import(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Import annotations", "", "Annotations (*.json *.geojson *.sqlite *.db *.csv)"
        )
        if path:
            self.import_annotations(path)

    @_reports_errors
    def import_annotations(self, path: str | Path) -> None:
        """Import an annotation file (MIDOG JSON, SlideRunner, GeoJSON, CSV) matched to this image by file name."""
        from midog_viewer.review.importing import import_file, summary_line

        if self.session is None:
            notify.show_error("Open the image the annotations belong to before importing them.")
            return
        summary = import_file(self.session.store, path, image_name=Path(self.slide.path).name)
        self.session.reload()
        self.rebuild_overlay()
        notify.show_info(summary_line(summary))
