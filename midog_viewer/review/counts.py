"""Mitotic counts per high-power field (HPF), per 10 HPF and per 2 mm², the hotspot, and the mitotic score.

An HPF is an area (default 0.237 mm², configurable), not a magnification. The fields counted are the
HPF rectangles a reviewer drew (stored in the review database) or, when there are none, a grid of
HPF-sized rectangles (4:3, like a camera field) over a region (default: the whole slide; fields cut by
its edge keep their true, smaller area). An object is in a field when its box centre is.

A mitotic figure is one cell: ground truth, accepted detections and mitoses added by hand whose centres
lie within the MIDOG hit radius (7.5 µm) of each other are one figure (:func:`~midog_viewer.evaluate.
merge_within_radius`, ground truth first, then reviewed objects, then pending detections by score), counted
once, where its first object is. Counted per field, for the "mitotic figure" class: ``ground_truth``
(figures in the imported labels), ``accepted`` (figures confirmed by review that the ground truth lacks),
``pending`` (figures only unreviewed detections at or above the operating threshold show) and ``rejected``
(detections rejected, or relabelled to another class). ``mitoses`` = accepted + ground truth (plus pending
with ``count_pending``): the count every figure below is computed from. ``atypical``: the mitoses whose
figure is atypical: a reviewer's subtype decision on any of its objects (the first, in the merge order),
else the subtype its annotation's file gave, else the classifier's call of its detection.

The operating threshold is the one given, else the one the slide's latest detection run recorded
(``operating_thr`` in its parameters), else the one in the header of that run's model file (as the dock's
slider starts), else the detector's default (:class:`~midog_viewer.detect.config.CascadeConfig`
``score_threshold``): candidates stored below it (the dock keeps them down to 0.10 for its slider) are
neither pending nor counted.

Fields (drawn or grid) and the region count only their part inside the image, when its size is known.

The hotspot is the window of 10 HPF (or of 2 mm²) with the most mitoses, searched over the region in
steps of an eighth of the window. The Nottingham mitotic score uses Elston & Ellis' thresholds (1991,
field area 0.274 mm²: score 1 for 0–9, 2 for 10–19, 3 for ≥ 20 mitoses per 10 HPF) scaled to the field
area used, on the drawn fields' count per 10 HPF when fields were drawn, else on the hotspot's.
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from midog_viewer.classes import MITOTIC_FIGURE
from midog_viewer.errors import ModelError, ReviewStoreError
from midog_viewer.evaluate import merge_within_radius
from midog_viewer.review.status import DETECTION, Status
from midog_viewer.review.store import ObjectTable, ReviewStore, Slide

DEFAULT_HPF_MM2 = 0.237
#: Width over height of a grid field.
HPF_ASPECT = 4 / 3
#: Elston & Ellis (1991): 10 fields of 0.274 mm²; score 1 below 10, 2 below 20, 3 from 20 mitoses.
REFERENCE_FIELD_MM2 = 0.274
REFERENCE_CUTS = (10, 20)
#: Steps per window side in the hotspot search.
HOTSPOT_STEPS = 8
WINDOWS = ("10hpf", "2mm2")


@dataclass
class FieldCount:
    """One HPF: where it is (level-0 px), its area, and its counts."""

    slide: str
    hpf_id: str
    source: str  # "drawn" or "grid"
    x: float
    y: float
    w: float
    h: float
    area_mm2: float
    accepted: int = 0
    ground_truth: int = 0
    pending: int = 0
    rejected: int = 0
    mitoses: int = 0
    atypical: int = 0


@dataclass
class Hotspot:
    """The window with most mitoses: position and size in level-0 px, area in mm², mitoses in it."""

    x: float
    y: float
    w: float
    h: float
    area_mm2: float
    mitoses: int


@dataclass
class MitoticScore:
    """Nottingham mitotic score (1–3) with the scaled thresholds that gave it."""

    score: int
    count_per_10_hpf: float
    score_1_max: int
    score_3_min: int
    scaling: str


@dataclass
class SlideCounts:
    """Counts of one slide over its fields, normalised, with hotspot and mitotic score."""

    slide: str
    mpp: float
    hpf_mm2: float
    fields: list[FieldCount]
    totals: dict[str, int]
    area_mm2: float
    per_10_hpf: float
    per_2_mm2: float
    hotspot: Hotspot | None
    mitotic_score: MitoticScore
    field_source: str = field(default="grid")
    #: The operating threshold pending detections were taken from (None: the slide has no candidates).
    score_thr: float | None = None

    @property
    def atypical_per_hpf(self) -> float:
        """Atypical mitoses per HPF of ``hpf_mm2`` over the counted area."""
        return self.totals["atypical"] / self.area_mm2 * self.hpf_mm2 if self.area_mm2 > 0 else 0.0

    @property
    def atypical_per_10_hpf(self) -> float:
        return 10 * self.atypical_per_hpf

    @property
    def atypical_per_2_mm2(self) -> float:
        return self.totals["atypical"] / self.area_mm2 * 2.0 if self.area_mm2 > 0 else 0.0

    @property
    def atypical_share(self) -> float | None:
        """Atypical among all mitoses counted (None: no mitoses)."""
        return self.totals["atypical"] / self.totals["mitoses"] if self.totals["mitoses"] else None

    def as_json(self) -> dict:
        return {
            "slide": self.slide, "mpp": self.mpp, "hpf_mm2": self.hpf_mm2, "fields": len(self.fields),
            "field_source": self.field_source, "area_mm2": self.area_mm2, "totals": self.totals,
            "per_10_hpf": self.per_10_hpf, "per_2_mm2": self.per_2_mm2,
            "hotspot": None if self.hotspot is None else asdict(self.hotspot),
            "mitotic_score": asdict(self.mitotic_score), "score_thr": self.score_thr,
            "atypical_per_hpf": self.atypical_per_hpf, "atypical_per_10_hpf": self.atypical_per_10_hpf,
            "atypical_per_2_mm2": self.atypical_per_2_mm2, "atypical_share": self.atypical_share,
        }


def mitotic_score(count_per_10_hpf: float, hpf_mm2: float = DEFAULT_HPF_MM2) -> MitoticScore:
    """Score 1–3 from mitoses per 10 HPF of ``hpf_mm2``, thresholds scaled from Elston & Ellis' 0.274 mm²."""
    if not hpf_mm2 > 0:
        raise ReviewStoreError(f"an HPF area must be positive, not {hpf_mm2!r} mm².")
    factor = hpf_mm2 / REFERENCE_FIELD_MM2
    low, high = (cut * factor for cut in REFERENCE_CUTS)
    score_1_max = math.ceil(low) - 1
    score_3_min = math.ceil(high)
    score = 1 if count_per_10_hpf < low else 2 if count_per_10_hpf < high else 3
    scaling = (
        f"Elston & Ellis thresholds for 10 HPF of {REFERENCE_FIELD_MM2} mm² (score 1: 0-9, 2: 10-19, 3: >=20) "
        f"scaled by {hpf_mm2:g}/{REFERENCE_FIELD_MM2} = {factor:.3f}: score 1: 0-{score_1_max}, "
        f"2: {score_1_max + 1}-{score_3_min - 1}, 3: >={score_3_min} per 10 HPF of {hpf_mm2:g} mm²"
    )
    return MitoticScore(score, float(count_per_10_hpf), score_1_max, score_3_min, scaling)


def hpf_size_px(hpf_mm2: float, mpp: float, aspect: float = HPF_ASPECT) -> tuple[float, float]:
    """Width and height in level-0 pixels of an HPF of ``hpf_mm2`` at ``mpp`` µm per pixel."""
    height_mm = math.sqrt(hpf_mm2 / aspect)
    return aspect * height_mm * 1000.0 / mpp, height_mm * 1000.0 / mpp


def operating_threshold(store: ReviewStore, slide_id: int) -> float:
    """The score from which a stored detection is a candidate: see the module docstring."""
    runs = store.detection_runs(slide_id)
    for run in reversed(runs):
        value = run["params"].get("operating_thr") if isinstance(run["params"], dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0:
            return float(value)
    from midog_viewer.detect.checkpoint import read_config  # only where there are candidates to count
    from midog_viewer.detect.config import CascadeConfig

    if runs:
        try:
            return float(read_config(runs[-1]["model"]).score_threshold)
        except (ModelError, OSError):  # moved, unreadable, or an mmdet file (which records none)
            pass
    return float(CascadeConfig.score_threshold)


def _check_threshold(score_thr: float) -> float:
    if not (isinstance(score_thr, (int, float)) and 0.0 <= score_thr <= 1.0):
        raise ReviewStoreError(f"a score threshold lies between 0 and 1, not {score_thr!r}.")
    return float(score_thr)


def _categories(table: ObjectTable, count_pending: bool, score_thr: float, mpp: float) -> dict[str, np.ndarray]:
    """Per-row masks; ground truth, accepted and pending are the rows that name a distinct figure."""
    mitotic = table.label == MITOTIC_FIGURE
    detection = table.kind == DETECTION
    accepted = mitotic & (table.status == Status.ACCEPTED.value)
    ground_truth = mitotic & (table.status == Status.GROUND_TRUTH.value)
    score = np.nan_to_num(table.score, nan=1.0)  # as the dock: a candidate without a score is shown
    pending = mitotic & detection & (table.status == Status.PENDING.value) & (score >= score_thr)
    rejected = detection & (
        (mitotic & (table.status == Status.REJECTED.value)) | (table.status == Status.RELABELLED.value)
    )
    candidates = np.flatnonzero(pending)
    order = np.concatenate([np.flatnonzero(ground_truth), np.flatnonzero(accepted),
                            candidates[np.argsort(-score[candidates], kind="stable")]])
    labels = merge_within_radius(table.centres[order] * (mpp / 1000.0))
    first = np.zeros(len(table), dtype=bool)
    first[order[labels == np.arange(len(order))]] = True
    accepted, ground_truth, pending = accepted & first, ground_truth & first, pending & first
    mitoses = accepted | ground_truth | (pending if count_pending else False)
    atypical = mitoses & _figure_atypical(table, order, labels)
    return {"accepted": accepted, "ground_truth": ground_truth, "pending": pending, "rejected": rejected,
            "mitoses": mitoses, "atypical": atypical}


def _figure_atypical(table: ObjectTable, order: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per row: whether the figure it heads (merge groups ``labels`` over rows ``order``) is atypical.

    The subtype comes from the member with the best rank (a reviewer's decision, then an annotation's known
    subtype, then a detection's call), the earliest in ``order`` among equals; none known: not atypical.
    """
    out = np.zeros(len(table), dtype=bool)
    if not len(order):
        return out
    known = table.atypical[order] >= 0
    rank = np.where(table.subtype_decided[order], 0, np.where(table.kind[order] == DETECTION, 2, 1))
    rank = np.where(known, rank, 3)
    n = len(order)
    key = rank.astype(np.int64) * n + np.arange(n)
    best = np.full(n, 4 * n, dtype=np.int64)
    np.minimum.at(best, labels, key)
    roots = np.flatnonzero(best < 3 * n)  # groups (ids are the root's position) with a known subtype
    chosen = order[best[roots] % n]
    out[order[roots]] = table.atypical[chosen] == 1
    return out


def _clip(rect: tuple[float, float, float, float], slide: Slide) -> tuple[float, float, float, float]:
    """The part of an x, y, w, h rectangle inside the image (all of it when the image size is unknown)."""
    x, y, w, h = rect
    if not (slide.width and slide.height):
        return float(x), float(y), float(w), float(h)
    x0, y0 = min(max(x, 0.0), slide.width), min(max(y, 0.0), slide.height)
    x1, y1 = min(max(x + w, 0.0), slide.width), min(max(y + h, 0.0), slide.height)
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def _default_region(slide: Slide, table: ObjectTable) -> tuple[float, float, float, float]:
    if slide.width and slide.height:
        return 0.0, 0.0, float(slide.width), float(slide.height)
    if len(table) == 0:
        raise ReviewStoreError(f"slide {slide.name} has no size and no objects, so there is no region to count.")
    return 0.0, 0.0, float(table.x2.max()), float(table.y2.max())


def _grid(slide: Slide, region: tuple[float, float, float, float], w: float, h: float, px_mm2: float) -> list[FieldCount]:
    x0, y0, rw, rh = region
    fields = []
    for row in range(max(1, math.ceil(rh / h))):
        for col in range(max(1, math.ceil(rw / w))):
            fx, fy = x0 + col * w, y0 + row * h
            fw, fh = min(w, x0 + rw - fx), min(h, y0 + rh - fy)
            fields.append(FieldCount(slide.name, f"r{row}c{col}", "grid", fx, fy, fw, fh, fw * fh * px_mm2))
    return fields


def _count_on_grid(
    fields: list[FieldCount], centres: np.ndarray, categories: dict[str, np.ndarray],
    region: tuple[float, float, float, float], w: float, h: float,
) -> None:
    """Fill grid fields' counts by binning centres (one pass, whatever the number of fields)."""
    x0, y0, rw, rh = region
    columns = max(1, math.ceil(rw / w))
    inside = (centres[:, 0] >= x0) & (centres[:, 0] < x0 + rw) & (centres[:, 1] >= y0) & (centres[:, 1] < y0 + rh)
    col = np.floor((centres[:, 0] - x0) / w).astype(np.int64)
    row = np.floor((centres[:, 1] - y0) / h).astype(np.int64)
    index = row * columns + col
    for name, mask in categories.items():
        per_field = np.bincount(index[inside & mask], minlength=len(fields))
        for f, n in zip(fields, per_field.tolist()):
            setattr(f, name, n)


def _hotspot(
    centres: np.ndarray, region: tuple[float, float, float, float], w: float, h: float, px_mm2: float
) -> Hotspot:
    """The w × h window (clipped to the region) with the most points, on a grid of 1/8-window steps."""
    x0, y0, rw, rh = region
    w, h = min(w, rw), min(h, rh)
    inside = (centres[:, 0] >= x0) & (centres[:, 0] < x0 + rw) & (centres[:, 1] >= y0) & (centres[:, 1] < y0 + rh)
    centres = centres[inside]
    step_x, step_y = w / HOTSPOT_STEPS, h / HOTSPOT_STEPS
    nx = max(HOTSPOT_STEPS, math.ceil(rw / step_x)) if step_x > 0 else HOTSPOT_STEPS
    ny = max(HOTSPOT_STEPS, math.ceil(rh / step_y)) if step_y > 0 else HOTSPOT_STEPS
    cells = np.zeros((ny, nx), dtype=np.int64)
    if len(centres) and step_x > 0 and step_y > 0:
        ix = np.clip(np.floor((centres[:, 0] - x0) / step_x).astype(np.int64), 0, nx - 1)
        iy = np.clip(np.floor((centres[:, 1] - y0) / step_y).astype(np.int64), 0, ny - 1)
        np.add.at(cells, (iy, ix), 1)
    summed = np.zeros((ny + 1, nx + 1), dtype=np.int64)
    summed[1:, 1:] = cells.cumsum(0).cumsum(1)
    k = HOTSPOT_STEPS
    windows = summed[k:, k:] - summed[:-k, k:] - summed[k:, :-k] + summed[:-k, :-k]
    # keep windows inside the region (the last cells may overhang it)
    max_row = max(0, min(windows.shape[0] - 1, math.floor((rh - h) / step_y + 1e-9))) if step_y > 0 else 0
    max_col = max(0, min(windows.shape[1] - 1, math.floor((rw - w) / step_x + 1e-9))) if step_x > 0 else 0
    windows = windows[: max_row + 1, : max_col + 1]
    row, col = np.unravel_index(int(np.argmax(windows)), windows.shape)
    return Hotspot(float(x0 + col * step_x), float(y0 + row * step_y), float(w), float(h), float(w * h * px_mm2),
                   int(windows[row, col]))


def count_slide(
    store: ReviewStore,
    slide_id: int,
    *,
    hpf_mm2: float = DEFAULT_HPF_MM2,
    region: tuple[float, float, float, float] | None = None,
    use_drawn: bool = True,
    count_pending: bool = False,
    window: str = "10hpf",
    mpp: float | None = None,
    score_thr: float | None = None,
    objects: ObjectTable | None = None,
) -> SlideCounts:
    """Count one slide's mitoses per HPF (drawn fields, or a grid over ``region``), with hotspot and score.

    ``score_thr``: the operating threshold for pending detections (None: the recorded or default one).
    ``objects``: the slide's rows as ``store.objects(slide_id)`` gives them, when the caller has read them
    already, so several counts of one slide come from one read (and one snapshot).
    """
    if not hpf_mm2 > 0:
        raise ReviewStoreError(f"an HPF area must be positive, not {hpf_mm2!r} mm².")
    if window not in WINDOWS:
        raise ReviewStoreError(f"the hotspot window is '10hpf' or '2mm2', not {window!r}.")
    slide = store.slide(slide_id)
    mpp = mpp or slide.mpp
    if not mpp:
        raise ReviewStoreError(f"slide {slide.name} has no pixel size (µm per pixel); record one, or pass --mpp to midog-viewer counts.")
    px_mm2 = (mpp / 1000.0) ** 2
    table = store.objects(slide_id) if objects is None else objects
    if score_thr is not None:
        score_thr = _check_threshold(score_thr)
    elif np.any((table.kind == DETECTION) & (table.status == Status.PENDING.value)):
        score_thr = operating_threshold(store, slide_id)  # looked up only where there are candidates
    categories = _categories(table, count_pending, 0.0 if score_thr is None else score_thr, mpp)
    centres = table.centres
    drawn = store.hpf_regions(slide_id) if use_drawn else []
    if region is not None:
        region = _clip(region, slide)
    if drawn:
        fields = []
        for r in drawn:
            x, y, w, h = _clip((r.x, r.y, r.w, r.h), slide)
            fields.append(FieldCount(slide.name, f"hpf{r.id}", "drawn", x, y, w, h, w * h * px_mm2))
        for f in fields:
            inside = (centres[:, 0] >= f.x) & (centres[:, 0] < f.x + f.w) & (centres[:, 1] >= f.y) & (centres[:, 1] < f.y + f.h)
            for name, mask in categories.items():
                setattr(f, name, int((inside & mask).sum()))
    else:
        grid_region = region or _default_region(slide, table)
        field_w, field_h = hpf_size_px(hpf_mm2, mpp)
        fields = _grid(slide, grid_region, field_w, field_h, px_mm2)
        _count_on_grid(fields, centres, categories, grid_region, field_w, field_h)
    totals = {name: sum(getattr(f, name) for f in fields) for name in categories}
    area = sum(f.area_mm2 for f in fields)
    density = totals["mitoses"] / area if area > 0 else 0.0
    hotspot_region = region or _default_region(slide, table)
    window_mm2 = 10 * hpf_mm2 if window == "10hpf" else 2.0
    w, h = hpf_size_px(window_mm2, mpp)
    hotspot = _hotspot(centres[categories["mitoses"]], hotspot_region, w, h, px_mm2)
    if drawn:
        per_10 = density * 10 * hpf_mm2
    else:
        per_10 = hotspot.mitoses * (10 * hpf_mm2) / hotspot.area_mm2 if hotspot.area_mm2 > 0 else 0.0
    return SlideCounts(
        slide.name, float(mpp), hpf_mm2, fields, totals, area, density * 10 * hpf_mm2, density * 2.0, hotspot,
        mitotic_score(per_10, hpf_mm2), "drawn" if drawn else "grid", score_thr,
    )


CSV_COLUMNS = ("slide", "hpf_id", "source", "x", "y", "w_px", "h_px", "area_mm2",
               "accepted", "ground_truth", "pending", "rejected", "mitoses", "atypical")


def write_counts_csv(path: str | Path, slides: list[SlideCounts]) -> None:
    """The counts CSV: one row per HPF with slide, HPF id, position and size in px and mm², and counts."""
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for counts in slides:
            for f in counts.fields:
                writer.writerow([f.slide, f.hpf_id, f.source, round(f.x, 2), round(f.y, 2), round(f.w, 2), round(f.h, 2),
                                 round(f.area_mm2, 6), f.accepted, f.ground_truth, f.pending, f.rejected, f.mitoses,
                                 f.atypical])
