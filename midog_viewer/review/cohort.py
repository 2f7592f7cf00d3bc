"""A review store's slides with their counts, busiest hotspot first: where a reviewer starts on a cohort."""

from __future__ import annotations

from midog_viewer.errors import MidogError
from midog_viewer.review.counts import count_slide
from midog_viewer.review.store import ReviewStore


def cohort_rows(store: ReviewStore, hpf_mm2: float) -> list[dict]:
    """One row per slide of ``store`` (counts at each slide's operating threshold), busiest hotspot first.

    A slide that cannot be counted (no pixel size) is listed with empty counts, last.
    """
    rows = []
    for slide in store.slides():
        row = {"id": slide.id, "path": slide.path, "slide": slide.name, "mitoses": None, "per_10_hpf": None,
               "hotspot": None, "score": None}
        try:
            counts = count_slide(store, slide.id, hpf_mm2=hpf_mm2, count_pending=True)
        except MidogError:
            rows.append(row)
            continue
        row.update(mitoses=counts.totals.get("mitoses", 0), per_10_hpf=counts.per_10_hpf,
                   hotspot=None if counts.hotspot is None else counts.hotspot.mitoses, score=counts.mitotic_score.score)
        rows.append(row)
    rows.sort(key=lambda r: (r["hotspot"] is None, -(r["hotspot"] or 0), -(r["per_10_hpf"] or 0), r["slide"]))
    return rows
