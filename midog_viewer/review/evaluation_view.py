"""Evaluation colouring: predictions matched to ground truth by the MIDOG rule, for the viewer.

With ground truth loaded instead of a review, a mitotic-figure prediction matched to a ground-truth
mitosis is ``MATCHED`` (yellow), an unmatched one ``UNMATCHED`` (red); ground truth is white, either
``GROUND_TRUTH`` (found) or ``MISSED`` (a white box with no yellow one on it). Matching follows the
MIDOG rule through its one matcher, :func:`midog_viewer.evaluate.match_points`: for each ground-truth
mitosis in order, the nearest free prediction whose centre lies within the radius (7.5 µm). It is done
over the whole slide, so a box near the edge of the viewed region is coloured as in the full evaluation. Only "mitotic figure" objects
take part; ground truth here is imported labels and mitoses added by hand.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from midog_viewer.classes import MITOTIC_FIGURE
from midog_viewer.errors import ReviewStoreError
from midog_viewer.evaluate import RADIUS_UM, match_points
from midog_viewer.review.status import ANNOTATION, DETECTION, Status
from midog_viewer.review.store import ObjectTable, ReviewStore

__all__ = ["evaluation_table", "match_points"]


def evaluation_table(
    store: ReviewStore,
    slide_id: int,
    region: Sequence[float] | None = None,
    *,
    run_id: int | None = None,
    score_threshold: float = 0.0,
    radius_um: float = RADIUS_UM,
) -> ObjectTable:
    """Mitotic-figure predictions and ground truth of a slide with evaluation statuses (see module docstring)."""
    slide = store.slide(slide_id)
    if not slide.mpp:
        raise ReviewStoreError(
            f"slide {slide.name} has no pixel size, so the {RADIUS_UM:g} µm match radius has no size in pixels."
        )
    table = store.objects(slide_id, run_id=run_id)
    mitotic = table.label == MITOTIC_FIGURE
    predictions = np.flatnonzero(mitotic & (table.kind == DETECTION) & (table.score >= score_threshold))
    truth = np.flatnonzero(
        mitotic & (table.kind == ANNOTATION)
        & np.isin(table.status, [Status.GROUND_TRUTH.value, Status.ACCEPTED.value])
    )
    centres = table.centres
    match_of_gt, taken = match_points(centres[truth], centres[predictions], radius_um / slide.mpp)
    status = table.status.copy()
    status[predictions] = np.where(taken, Status.MATCHED.value, Status.UNMATCHED.value)
    status[truth] = np.where(match_of_gt >= 0, Status.GROUND_TRUTH.value, Status.MISSED.value)
    keep = np.zeros(len(table), dtype=bool)
    keep[predictions] = True
    keep[truth] = True
    if region is not None:
        x, y, w, h = (float(v) for v in region)
        keep &= (table.x2 >= x) & (table.x1 <= x + w) & (table.y2 >= y) & (table.y1 <= y + h)
    result = ObjectTable(**{c: getattr(table, c) for c in table.keys() if c != "status"}, status=status)
    return result.select(keep)
