"""Evaluation colouring: predictions matched to ground truth by the MIDOG rule, for the viewer.

With ground truth loaded instead of a review, a mitotic-figure prediction matched to a ground-truth
mitosis is ``MATCHED`` (yellow), an unmatched one ``UNMATCHED`` (red); ground truth is white, either
``GROUND_TRUTH`` (found) or ``MISSED`` (a white box with no yellow one on it). Matching follows the
MIDOG rule (:mod:`midog_viewer.evaluate`): for each ground-truth mitosis in order, the nearest free
prediction whose centre lies within the radius (7.5 µm). It is done over the whole slide, so a box near
the edge of the viewed region is coloured as in the full evaluation. Only "mitotic figure" objects
take part; ground truth here is imported labels and mitoses added by hand.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from midog_viewer.classes import MITOTIC_FIGURE
from midog_viewer.errors import ReviewStoreError
from midog_viewer.review.status import Status
from midog_viewer.review.store import ObjectTable, ReviewStore

RADIUS_UM = 7.5


def match_points(gt_xy: np.ndarray, pred_xy: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """MIDOG greedy matching, returning who matched: (pred index per gt or -1, bool per prediction).

    Works in any unit (pixels with a pixel radius); a grid keeps it fast for 100,000 predictions.
    """
    gt_xy = np.asarray(gt_xy, dtype=np.float64).reshape(-1, 2)
    pred_xy = np.asarray(pred_xy, dtype=np.float64).reshape(-1, 2)
    match_of_gt = np.full(len(gt_xy), -1, dtype=np.int64)
    taken = np.zeros(len(pred_xy), dtype=bool)
    if len(gt_xy) == 0 or len(pred_xy) == 0:
        return match_of_gt, taken
    cell = max(float(radius), 1e-12)
    keys = np.floor(pred_xy / cell).astype(np.int64)
    buckets: dict[tuple[int, int], list[int]] = {}
    for index, (kx, ky) in enumerate(keys.tolist()):
        buckets.setdefault((kx, ky), []).append(index)
    for g, (gx, gy) in enumerate(gt_xy.tolist()):
        cx, cy = int(np.floor(gx / cell)), int(np.floor(gy / cell))
        candidates = [i for dx in (-1, 0, 1) for dy in (-1, 0, 1) for i in buckets.get((cx + dx, cy + dy), ())]
        if not candidates:
            continue
        candidates.sort()
        cand = np.asarray(candidates)
        distances = np.hypot(pred_xy[cand, 0] - gx, pred_xy[cand, 1] - gy)
        ok = (distances <= radius) & ~taken[cand]
        if ok.any():
            best = cand[ok][np.argsort(distances[ok], kind="stable")[0]]
            taken[best] = True
            match_of_gt[g] = best
    return match_of_gt, taken


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
        raise ReviewStoreError(f"slide {slide.name} has no pixel size, so the 7.5 µm match radius has no size in pixels.")
    table = store.objects(slide_id, run_id=run_id)
    mitotic = table.label == MITOTIC_FIGURE
    predictions = np.flatnonzero(mitotic & (table.kind == "detection") & (table.score >= score_threshold))
    truth = np.flatnonzero(
        mitotic & (table.kind == "annotation")
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
