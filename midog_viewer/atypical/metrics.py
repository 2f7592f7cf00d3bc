"""Scores of a binary normal/atypical call: AUROC, balanced accuracy, and the threshold that maximises it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def auroc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties counted half); None when one class is missing."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    for start, count in zip(first, counts):
        ranks[order[start : start + count]] = start + (count + 1) / 2.0
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def balanced_accuracy(labels: Sequence[int], scores: Sequence[float], threshold: float) -> float | None:
    """Mean of sensitivity and specificity of ``score >= threshold``; None when one class is missing."""
    y = np.asarray(labels, dtype=bool)
    call = np.asarray(scores, dtype=np.float64) >= threshold
    if y.all() or not y.any():
        return None
    return float(0.5 * (call[y].mean() + (~call[~y]).mean()))


def best_threshold(labels: Sequence[int], scores: Sequence[float]) -> tuple[float, float]:
    """The threshold (midpoint between neighbouring scores) with the highest balanced accuracy, and that accuracy."""
    s = np.unique(np.asarray(scores, dtype=np.float64))
    candidates = np.concatenate([[0.0], (s[1:] + s[:-1]) / 2.0, [1.0]]) if len(s) > 1 else np.array([0.5])
    y = np.asarray(labels, dtype=bool)
    sc = np.asarray(scores, dtype=np.float64)
    best_t, best_ba = 0.5, -1.0
    for t in candidates:
        call = sc >= t
        ba = 0.5 * (call[y].mean() + (~call[~y]).mean()) if y.any() and (~y).any() else 0.0
        if ba > best_ba + 1e-12:
            best_t, best_ba = float(t), float(ba)
    return best_t, best_ba


def summary(labels: Sequence[int], scores: Sequence[float], sources: Sequence[str], threshold: float) -> dict[str, Any]:
    """Balanced accuracy at ``threshold`` and AUROC, over all crops and per source."""
    labels, scores, sources = np.asarray(labels), np.asarray(scores), np.asarray(sources)

    def part(mask: np.ndarray) -> dict[str, Any]:
        return {
            "n": int(mask.sum()),
            "n_atypical": int(labels[mask].sum()),
            "balanced_accuracy": balanced_accuracy(labels[mask], scores[mask], threshold),
            "auroc": auroc(labels[mask], scores[mask]),
        }

    result = {"threshold": float(threshold), "all": part(np.ones(len(labels), dtype=bool))}
    result["per_source"] = {name: part(sources == name) for name in sorted(set(sources.tolist()))}
    return result
