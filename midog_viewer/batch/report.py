"""REPORT.csv of a cohort run: one row per slide, counted by :mod:`midog_viewer.review.counts`, written atomically."""

from __future__ import annotations

import csv
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from midog_viewer.errors import MidogError
from midog_viewer.review.counts import count_slide
from midog_viewer.review.status import Status
from midog_viewer.review.store import ObjectTable, ReviewStore

COLUMNS = ("slide", "status", "error", "tissue_fraction", "tiles", "mitoses", "per_10_hpf", "per_2_mm2",
           "hotspot_x", "hotspot_y", "hotspot_w", "hotspot_h", "hotspot_count", "mitotic_score", "seconds")
DONE, SKIPPED, FAILED = "done", "skipped", "failed"


@dataclass
class SlideRow:
    """One slide's line of the report (empty strings where a value is unknown)."""

    slide: str
    status: str
    error: str = ""
    tissue_fraction: Any = ""
    tiles: Any = ""
    mitoses: Any = ""
    per_10_hpf: Any = ""
    per_2_mm2: Any = ""
    hotspot_x: Any = ""
    hotspot_y: Any = ""
    hotspot_w: Any = ""
    hotspot_h: Any = ""
    hotspot_count: Any = ""
    mitotic_score: Any = ""
    seconds: Any = ""


class _AtThreshold:
    """The store as :func:`count_slide` reads it, with pending detections below ``score_thr`` left out.

    Counting stays in counts.py; this only decides which pending detections are mitoses at the operating
    threshold (detections a reviewer decided on count whatever their score).
    """

    def __init__(self, store: ReviewStore, score_thr: float) -> None:
        self._store, self._thr = store, score_thr

    def slide(self, slide_id: int) -> Any:
        return self._store.slide(slide_id)

    def hpf_regions(self, slide_id: int) -> Any:
        return self._store.hpf_regions(slide_id)

    def objects(self, slide_id: int) -> ObjectTable:
        table = self._store.objects(slide_id)
        below = (table.status == Status.PENDING.value) & (table.kind == "detection") & (table.score < self._thr)
        return table.select(~below)


def counted_row(store: ReviewStore, slide_id: int, name: str, status: str, plan: dict[str, Any],
                seconds: float) -> SlideRow:
    """The report row of a finished slide: its counts over the tissue's bounding box, pending at threshold."""
    row = SlideRow(name, status, tissue_fraction=plan["tissue_fraction"], tiles=len(plan["tiles"]),
                   seconds=round(seconds, 2))
    region = plan.get("tissue_box") or None
    view = _AtThreshold(store, float(plan["score_thr"]))
    try:
        counts = count_slide(view, slide_id, region=region, count_pending=True)  # type: ignore[arg-type]
    except MidogError as exc:  # no pixel size: the count stands, densities are unknown
        counts = count_slide(view, slide_id, region=region, count_pending=True, mpp=1.0)  # type: ignore[arg-type]
        row.mitoses = counts.totals["mitoses"]
        row.error = str(exc)
        return row
    row.mitoses = counts.totals["mitoses"]
    row.per_10_hpf, row.per_2_mm2 = round(counts.per_10_hpf, 3), round(counts.per_2_mm2, 3)
    if counts.hotspot is not None:
        spot = counts.hotspot
        row.hotspot_x, row.hotspot_y, row.hotspot_w, row.hotspot_h = (round(v, 1) for v in (spot.x, spot.y, spot.w, spot.h))
        row.hotspot_count = spot.mitoses
    row.mitotic_score = counts.mitotic_score.score
    return row


def write_report(path: str | Path, rows: list[SlideRow]) -> None:
    """Write the report atomically: a temporary file in the same folder, fsynced, then renamed over ``path``."""
    path = Path(path)
    handle = tempfile.NamedTemporaryFile(
        "w", newline="", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", suffix=".part", delete=False
    )
    try:
        with handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            for row in rows:
                writer.writerow([getattr(row, column) for column in COLUMNS])
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except OSError:  # pragma: no cover - some file systems refuse fsync on folders
        pass
