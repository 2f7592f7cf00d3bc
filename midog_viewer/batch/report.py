"""REPORT.csv of a cohort run: one row per slide, counted by :mod:`midog_viewer.review.counts`, written atomically."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from midog_viewer.errors import MidogError
from midog_viewer.formats import atomic
from midog_viewer.review.counts import count_slide
from midog_viewer.review.store import ReviewStore

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


def counted_row(store: ReviewStore, slide_id: int, name: str, status: str, plan: dict[str, Any],
                seconds: float) -> SlideRow:
    """The report row of a finished slide: its counts over the tissue's bounding box, pending at threshold."""
    row = SlideRow(name, status, tissue_fraction=plan["tissue_fraction"], tiles=len(plan["tiles"]),
                   seconds=round(seconds, 2))
    region = plan.get("tissue_box") or None
    # Pending means pending at the operating threshold; detections a reviewer decided count whatever their score.
    at = {"region": region, "count_pending": True, "score_thr": float(plan["score_thr"])}
    try:
        counts = count_slide(store, slide_id, **at)
    except MidogError as exc:  # no pixel size: the count stands, densities are unknown
        counts = count_slide(store, slide_id, mpp=1.0, **at)
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
    with atomic.open_text(path, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow([getattr(row, column) for column in COLUMNS])
