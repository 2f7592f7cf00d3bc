"""The official MIDOG metric, computed as the organisers' evaluation container computes it.

Matching (evalutils ``score_detection``): coordinates in mm; for each ground-truth point in list order,
the nearest prediction within 7.5 µm that no earlier ground-truth point took is its true positive
(so a second detection of the same cell is a false positive); leftover predictions are false positives,
unhit ground truth false negatives. Only predictions named "mitotic figure" are matched.

Aggregation (MIDOG 2025 ``evaluate.py``): TP, FP and FN are summed over all cases, then, with
``eps = 1e-6``, precision = TP / (TP + FP + eps), recall = TP / (TP + FN + eps) and
F1 = (2 TP + eps) / (2 TP + FP + FN + eps). The same sums are split by tumour domain and ROI type when
the ground truth names them.

AP is torchmetrics' ``MeanAveragePrecision`` ``map_50`` (COCO rules, pycocotools backend, 101 recall
thresholds ``np.arange(0, 1.01, 0.01)``) on squares of half-side 0.01125 mm around every predicted and
ground-truth point, reimplemented here in numpy (float32 boxes and result, as torch holds them). As in
the organisers' code every predicted point enters AP whatever its class name.

A ground-truth case with no predictions at all counts as all false negatives (the organisers' container
only scores submitted jobs, but grand-challenge gives every case a job, so complete submissions agree).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from midog_viewer.classes import CLASS_NAMES, GC_POINT_NAMES, MITOTIC_FIGURE, canonical_class
from midog_viewer.errors import AnnotationFormatError
from midog_viewer.formats.gc_points import GroundTruthCase, PointPrediction

#: Hit radius of the MIDOG challenges: 7.5 µm (the one place it is written; RADIUS_MM is the same in mm).
RADIUS_UM = 7.5
RADIUS_MM = RADIUS_UM / 1000.0
#: The organisers' guard against division by zero, part of every published figure.
EPS = 1e-6
#: Half-side of the square put around each point for AP (7.5 µm at IoU 0.5, the organisers' choice).
AP_BOX_HALF_SIDE_MM = 0.01125
#: COCO recall thresholds as the organisers pass them to torchmetrics.
RECALL_THRESHOLDS = np.arange(0, 1.01, 0.01)
#: The name a prediction needs to be matched (the organisers compare the raw string).
SCORED_NAME = GC_POINT_NAMES[MITOTIC_FIGURE]


class DetectionScore(NamedTuple):
    """TP, FN and FP of one case (the order of evalutils' DetectionScore)."""

    true_positives: int
    false_negatives: int
    false_positives: int


def _as_points(points: Any, what: str) -> np.ndarray:
    array = np.asarray(points, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, 3))
    if array.ndim != 2 or not 2 <= array.shape[1] <= 3:
        raise AnnotationFormatError(f"{what} must be a list of [x, y] or [x, y, z] points, not shape {array.shape}.")
    if array.shape[1] == 2:
        array = np.hstack([array, np.zeros((len(array), 1))])
    return array


def match_points(
    gt_points: Sequence[Sequence[float]], pred_points: Sequence[Sequence[float]], radius: float = RADIUS_MM
) -> tuple[np.ndarray, np.ndarray]:
    """The MIDOG matcher (evalutils ``score_detection``): for each ground-truth point in list order, the
    nearest prediction within ``radius`` (≤) that no earlier one took (ties: the lower index).

    Returns who matched: the prediction index per ground-truth point (-1: missed) and a bool per
    prediction (taken). Any unit works (mm, or pixels with a pixel radius); points are [x, y] or
    [x, y, z]. A grid on (x, y) keeps it fast for 100,000 predictions.
    """
    gt = _as_points(gt_points, "ground-truth points")
    pred = _as_points(pred_points, "predicted points")
    match_of_gt = np.full(len(gt), -1, dtype=np.int64)
    taken = np.zeros(len(pred), dtype=bool)
    if len(gt) == 0 or len(pred) == 0:
        return match_of_gt, taken
    cell = max(float(radius), 1e-12)  # a hit lies in the 3 x 3 cells around its ground-truth point
    buckets: dict[tuple[int, int], list[int]] = {}
    for index, (kx, ky) in enumerate(np.floor(pred[:, :2] / cell).astype(np.int64).tolist()):
        buckets.setdefault((kx, ky), []).append(index)
    for g, point in enumerate(gt):
        cx, cy = (int(v) for v in np.floor(point[:2] / cell))
        candidates = sorted(i for dx in (-1, 0, 1) for dy in (-1, 0, 1) for i in buckets.get((cx + dx, cy + dy), ()))
        if not candidates:
            continue
        cand = np.asarray(candidates)
        distances = np.sqrt(((pred[cand] - point) ** 2).sum(axis=1))
        ok = (distances <= radius) & ~taken[cand]
        if ok.any():
            best = cand[ok][np.argsort(distances[ok], kind="stable")[0]]
            taken[best] = True
            match_of_gt[g] = best
    return match_of_gt, taken


def score_detection(
    gt_points_mm: Sequence[Sequence[float]], pred_points_mm: Sequence[Sequence[float]], radius_mm: float = RADIUS_MM
) -> DetectionScore:
    """Greedy MIDOG matching of one case (:func:`match_points`): TP, FN and FP."""
    match_of_gt, taken = match_points(gt_points_mm, pred_points_mm, radius_mm)
    true_positives = int((match_of_gt >= 0).sum())
    return DetectionScore(true_positives, len(match_of_gt) - true_positives, int((~taken).sum()))


def _near(cells: dict[tuple[int, int], list[int]], points: np.ndarray, point: np.ndarray, radius_mm: float) -> int:
    """Index of the nearest of ``points`` (indexed by grid cell) within ``radius_mm`` of ``point``, or -1."""
    cx, cy = (int(v) for v in np.floor(point[:2] / radius_mm))
    best, best_distance = -1, math.inf
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for j in cells.get((cx + dx, cy + dy), ()):
                distance = math.sqrt(float(((points[j] - point) ** 2).sum()))
                if distance <= radius_mm and distance < best_distance:
                    best, best_distance = j, distance
    return best


def _check_radius(radius_mm: float) -> None:
    if not (math.isfinite(radius_mm) and radius_mm > 0):
        raise AnnotationFormatError(f"a hit radius must be a positive number of mm, not {radius_mm!r}.")


def merge_within_radius(points_mm: Sequence[Sequence[float]], radius_mm: float = RADIUS_MM) -> np.ndarray:
    """Which figure each point is: the index of the figure's first point (one cell seen several times).

    Points are taken in order, as ``score_detection`` takes ground truth: a point within ``radius_mm``
    (≤, as a hit) of an earlier figure's first point is that figure (the nearest), else it starts one. So
    put the most trusted points first (ground truth, then reviewed ones): they name the figures.
    """
    _check_radius(radius_mm)
    points = _as_points(points_mm, "points")
    labels = np.arange(len(points))
    cells: dict[tuple[int, int], list[int]] = {}
    for i, point in enumerate(points):
        nearest = _near(cells, points, point, radius_mm)
        if nearest >= 0:
            labels[i] = nearest
        else:
            cx, cy = (int(v) for v in np.floor(point[:2] / radius_mm))
            cells.setdefault((cx, cy), []).append(i)
    return labels


def near_any(
    points_mm: Sequence[Sequence[float]], reference_mm: Sequence[Sequence[float]], radius_mm: float = RADIUS_MM
) -> np.ndarray:
    """Bool per point: some reference point lies within ``radius_mm`` (≤, as a hit) of it."""
    _check_radius(radius_mm)
    points = _as_points(points_mm, "points")
    reference = _as_points(reference_mm, "reference points")
    cells: dict[tuple[int, int], list[int]] = {}
    for j, point in enumerate(reference):
        cx, cy = (int(v) for v in np.floor(point[:2] / radius_mm))
        cells.setdefault((cx, cy), []).append(j)
    return np.array([_near(cells, reference, point, radius_mm) >= 0 for point in points], dtype=bool)


def precision_recall_f1(tp: int, fp: int, fn: int) -> dict[str, float]:
    """The organisers' formulas, including their ``eps``."""
    return {
        "precision": tp / (tp + fp + EPS),
        "recall": tp / (tp + fn + EPS),
        "f1": (2 * tp + EPS) / (2 * tp + fp + fn + EPS),
    }


# -- AP (torchmetrics map_50, pycocotools rules) ------------------------------------------------------


def _coco_boxes(points: np.ndarray) -> np.ndarray:
    """Squares around points as torchmetrics hands them to pycocotools: float32 xyxy → float32 xywh."""
    if len(points) == 0:
        return np.zeros((0, 4))
    half = AP_BOX_HALF_SIDE_MM
    xyxy = np.stack(
        [points[:, 0] - half, points[:, 1] - half, points[:, 0] + half, points[:, 1] + half], axis=1
    ).astype(np.float32)
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    return xywh.astype(np.float64)


def _iou_xywh(dt: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """pycocotools' bbox IoU (no +1, doubles)."""
    dx1, dy1 = dt[:, 0:1], dt[:, 1:2]
    dx2, dy2 = dx1 + dt[:, 2:3], dy1 + dt[:, 3:4]
    gx1, gy1 = gt[:, 0], gt[:, 1]
    gx2, gy2 = gx1 + gt[:, 2], gy1 + gt[:, 3]
    w = np.minimum(dx2, gx2) - np.maximum(dx1, gx1)
    h = np.minimum(dy2, gy2) - np.maximum(dy1, gy1)
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)
    union = (dt[:, 2:3] * dt[:, 3:4]) + (gt[:, 2] * gt[:, 3]) - inter
    return inter / union


def average_precision(
    gt_points_per_case: Sequence[np.ndarray],
    pred_points_per_case: Sequence[np.ndarray],
    scores_per_case: Sequence[np.ndarray],
    iou_threshold: float = 0.5,
) -> float:
    """COCO AP at one IoU over cases (point → square boxes); -1.0 when there is no ground truth."""
    all_scores, all_matched = [], []
    n_gt = 0
    for gt_pts, pred_pts, scores in zip(gt_points_per_case, pred_points_per_case, scores_per_case):
        gt_boxes = _coco_boxes(_as_points(gt_pts, "ground-truth points"))
        dt_boxes = _coco_boxes(_as_points(pred_pts, "predicted points"))
        scores = np.asarray(scores, dtype=np.float32).astype(np.float64).reshape(-1)
        n_gt += len(gt_boxes)
        if len(dt_boxes) == 0:
            continue
        order = np.argsort(-scores, kind="mergesort")
        dt_boxes, scores = dt_boxes[order], scores[order]
        matched = np.zeros(len(dt_boxes), dtype=bool)
        if len(gt_boxes):
            ious = _iou_xywh(dt_boxes, gt_boxes)
            gt_taken = np.zeros(len(gt_boxes), dtype=bool)
            for d in range(len(dt_boxes)):
                best_iou, best = min(iou_threshold, 1 - 1e-10), -1
                for g in range(len(gt_boxes)):
                    if gt_taken[g] or ious[d, g] < best_iou:
                        continue
                    best_iou, best = ious[d, g], g
                if best >= 0:
                    gt_taken[best] = True
                    matched[d] = True
        all_scores.append(scores)
        all_matched.append(matched)
    if n_gt == 0:
        return -1.0
    if not all_scores:
        return 0.0
    scores = np.concatenate(all_scores)
    matched = np.concatenate(all_matched)[np.argsort(-scores, kind="mergesort")]
    tp = np.cumsum(matched).astype(np.float64)
    fp = np.cumsum(~matched).astype(np.float64)
    recall = tp / n_gt
    precision = tp / (fp + tp + np.spacing(1))
    for i in range(len(precision) - 1, 0, -1):
        if precision[i] > precision[i - 1]:
            precision[i - 1] = precision[i]
    sampled = np.zeros(len(RECALL_THRESHOLDS))
    for r, index in enumerate(np.searchsorted(recall, RECALL_THRESHOLDS, side="left")):
        if index < len(precision):
            sampled[r] = precision[index]
    return float(np.float32(np.mean(sampled)))


# -- evaluation of many cases -------------------------------------------------------------------------


@dataclass
class CaseResult:
    """One case: its TP/FP/FN and what went into them."""

    case: str
    tp: int
    fp: int
    fn: int
    gt: np.ndarray  # (N, 3) mm
    pred: np.ndarray  # (M, 3) mm, every predicted point
    scores: np.ndarray  # (M,)
    scored: np.ndarray  # (M,) bool: named "mitotic figure"
    tumor_domain: Any = None
    roi_type: str | None = None


@dataclass
class Evaluation:
    """Per-case results and the organisers' aggregates."""

    cases: list[CaseResult]
    aggregates: dict[str, float]
    missing_cases: list[str]

    @property
    def tp(self) -> int:
        return sum(c.tp for c in self.cases)

    @property
    def fp(self) -> int:
        return sum(c.fp for c in self.cases)

    @property
    def fn(self) -> int:
        return sum(c.fn for c in self.cases)

    def summary(self) -> dict:
        """The CLI's ``--json`` object: totals, precision, recall, F1, AP and per-case TP/FP/FN."""
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": self.aggregates["precision"],
            "recall": self.aggregates["recall"],
            "f1": self.aggregates["f1_score"],
            "AP": self.aggregates["AP"],
            "cases": {c.case: {"tp": c.tp, "fp": c.fp, "fn": c.fn} for c in self.cases},
            "missing_cases": self.missing_cases,
            "suspicious_cases": self.suspicious_cases(),
        }

    def case_rows(self) -> list[dict]:
        """One row per case: name, TP, FP, FN, precision, recall, F1, tumour domain, ROI type."""
        return [
            {"case": c.case, "tp": c.tp, "fp": c.fp, "fn": c.fn, **precision_recall_f1(c.tp, c.fp, c.fn),
             "tumor_domain": c.tumor_domain, "roi_type": c.roi_type}
            for c in self.cases
        ]

    def threshold_curve(self, max_thresholds: int = 200) -> list[dict]:
        """TP, FP, FN, precision, recall and F1 when only predictions scoring ≥ each threshold are kept.

        Thresholds are the distinct scores, or ``max_thresholds`` quantiles of them when there are more
        (the greedy matching is redone at each one).
        """
        all_scores = np.unique(np.concatenate([c.scores[c.scored] for c in self.cases] or [np.zeros(0)]))
        if len(all_scores) > max_thresholds:
            all_scores = np.unique(np.quantile(all_scores, np.linspace(0, 1, max_thresholds), method="lower"))
        rows = []
        for threshold in all_scores:
            tp = fp = fn = 0
            for c in self.cases:
                keep = c.scored & (c.scores >= threshold)
                score = score_detection(c.gt, c.pred[keep][:, :2])
                tp, fp, fn = tp + score.true_positives, fp + score.false_positives, fn + score.false_negatives
            rows.append({"threshold": float(threshold), "tp": tp, "fp": fp, "fn": fn, **precision_recall_f1(tp, fp, fn)})
        return rows

    def suspicious_cases(self) -> list[str]:
        """Cases with predicted points beyond 10 mm: probably pixel coordinates, not mm.

        The organisers' 2025 container refuses such files; the fixture's figures were computed with an
        earlier one that scored them, so they are scored here and only reported.
        """
        return [c.case for c in self.cases if len(c.pred) and np.abs(c.pred[:, :2]).max() > 10]


def _group_aggregates(prefix: str, cases: list[CaseResult]) -> dict[str, float]:
    tp, fp, fn = (sum(getattr(c, k) for c in cases) for k in ("tp", "fp", "fn"))
    prf = precision_recall_f1(tp, fp, fn)
    ap = average_precision([c.gt for c in cases], [c.pred for c in cases], [c.scores for c in cases])
    return {f"{prefix}precision": prf["precision"], f"{prefix}recall": prf["recall"],
            f"{prefix}f1" if prefix else "f1_score": prf["f1"], f"{prefix}AP": ap}


def evaluate_cases(
    ground_truth: Mapping[str, GroundTruthCase],
    predictions: Mapping[str, Sequence[PointPrediction]],
    radius_mm: float = RADIUS_MM,
) -> Evaluation:
    """Score every case with predictions (in their order), then every ground-truth case without any."""
    unknown = [case for case in predictions if case not in ground_truth]
    if unknown:
        raise AnnotationFormatError(f"predictions name case {unknown[0]!r}, which the ground truth lacks.")
    results = []
    order = list(predictions) + [case for case in ground_truth if case not in predictions]
    for case in order:
        truth = ground_truth[case]
        points = list(predictions.get(case, ()))
        pred = np.array([[p.x, p.y, p.z] for p in points], dtype=np.float64).reshape(-1, 3)
        scored = np.array([p.name == SCORED_NAME for p in points], dtype=bool)
        scores = np.array([p.probability for p in points], dtype=np.float64)
        gt = _as_points(truth.points, f"ground truth of {case}")
        score = score_detection(gt, pred[scored][:, :2], radius_mm)
        results.append(CaseResult(case, score.true_positives, score.false_positives, score.false_negatives,
                                  gt, pred, scores, scored, truth.tumor_domain, truth.roi_type))
    aggregates = _group_aggregates("", results)
    aggregates = {"precision": aggregates["precision"], "recall": aggregates["recall"],
                  "f1_score": aggregates["f1_score"], "AP": aggregates["AP"]}
    domains = [c.tumor_domain for c in results if c.tumor_domain is not None]
    for domain in sorted(set(domains), key=str):
        aggregates.update(_group_aggregates(f"tumor_{domain}_", [c for c in results if c.tumor_domain == domain]))
    for roi_type in dict.fromkeys(c.roi_type for c in results if c.roi_type is not None):
        aggregates.update(_group_aggregates(f"roi_type_{roi_type}_", [c for c in results if c.roi_type == roi_type]))
    return Evaluation(results, aggregates, [case for case in ground_truth if case not in predictions])


def write_pr_curve(evaluation: Evaluation, path: str | Path) -> None:
    """Save precision against recall over score thresholds as a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    curve = evaluation.threshold_curve()[::-1]  # from the highest threshold: recall grows left to right
    figure = Figure(figsize=(5, 4), dpi=100)
    axes = figure.add_subplot()
    axes.plot([r["recall"] for r in curve], [r["precision"] for r in curve], marker="o")
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_xlim(0, 1.02)
    axes.set_ylim(0, 1.02)
    axes.set_title(f"F1 {evaluation.aggregates['f1_score']:.4f}, AP {evaluation.aggregates['AP']:.4f}")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(str(path))


# -- boxes in pixels (training) -----------------------------------------------------------------------


def _label_names(labels: Sequence[Any] | None, n: int) -> list[str] | None:
    if labels is None:
        return None
    names = [CLASS_NAMES[int(lab)] if isinstance(lab, (int, np.integer)) else canonical_class(lab) for lab in labels]
    if len(names) != n:
        raise AnnotationFormatError(f"{len(names)} labels for {n} boxes.")
    return names


def f1_from_boxes(
    gt_boxes_per_image: Sequence[np.ndarray],
    pred_boxes_per_image: Sequence[np.ndarray],
    mpp_per_image: Sequence[float],
    radius_um: float = RADIUS_UM,
    *,
    pred_labels_per_image: Sequence[Sequence[Any]] | None = None,
    gt_labels_per_image: Sequence[Sequence[Any]] | None = None,
    pred_scores_per_image: Sequence[np.ndarray] | None = None,
    score_threshold: float = 0.0,
) -> dict[str, float]:
    """MIDOG TP/FP/FN, precision, recall and F1 on box centres in pixels (xyxy, level 0).

    Labels (strings, or ints indexing :data:`~midog_viewer.classes.CLASS_NAMES`) keep only mitotic
    figures on either side when given; scores below ``score_threshold`` are dropped when given.
    """
    if not (len(gt_boxes_per_image) == len(pred_boxes_per_image) == len(mpp_per_image)):
        raise AnnotationFormatError("f1_from_boxes needs as many ground-truth lists, prediction lists and mpp values.")
    tp = fp = fn = 0
    for i, (gt_boxes, pred_boxes, mpp) in enumerate(zip(gt_boxes_per_image, pred_boxes_per_image, mpp_per_image)):
        gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
        pred = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 4)
        if gt_labels_per_image is not None:
            names = _label_names(gt_labels_per_image[i], len(gt))
            gt = gt[np.array([n == MITOTIC_FIGURE for n in names], dtype=bool)]
        keep = np.ones(len(pred), dtype=bool)
        if pred_labels_per_image is not None:
            keep &= np.array([n == MITOTIC_FIGURE for n in _label_names(pred_labels_per_image[i], len(pred))], dtype=bool)
        if pred_scores_per_image is not None:
            keep &= np.asarray(pred_scores_per_image[i], dtype=np.float64).reshape(-1) >= score_threshold
        pred = pred[keep]
        to_mm = float(mpp) / 1000.0
        gt_mm = np.stack([(gt[:, 0] + gt[:, 2]) / 2, (gt[:, 1] + gt[:, 3]) / 2], axis=1) * to_mm
        pred_mm = np.stack([(pred[:, 0] + pred[:, 2]) / 2, (pred[:, 1] + pred[:, 3]) / 2], axis=1) * to_mm
        score = score_detection(gt_mm, pred_mm, radius_um / 1000.0)
        tp, fp, fn = tp + score.true_positives, fp + score.false_positives, fn + score.false_negatives
    return {"tp": tp, "fp": fp, "fn": fn, **precision_recall_f1(tp, fp, fn)}
