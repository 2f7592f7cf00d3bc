"""AUROC, balanced accuracy and the threshold tuned for it."""

from __future__ import annotations

import pytest

from midog_viewer.atypical.metrics import auroc, balanced_accuracy, best_threshold, summary


def test_auroc_counts_pairs_and_ties():
    assert auroc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert auroc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert auroc([0, 1], [0.5, 0.5]) == 0.5
    assert auroc([0, 0, 1], [0.1, 0.6, 0.4]) == pytest.approx(0.5)
    assert auroc([1, 1], [0.1, 0.2]) is None


def test_best_threshold_maximises_balanced_accuracy_on_imbalanced_labels():
    labels = [0] * 8 + [1] * 2
    scores = [0.1, 0.2, 0.2, 0.3, 0.3, 0.35, 0.4, 0.6, 0.45, 0.9]
    threshold, ba = best_threshold(labels, scores)
    assert 0.4 < threshold <= 0.45 and ba == pytest.approx(0.5 * (1 + 7 / 8))
    assert balanced_accuracy(labels, scores, threshold) == pytest.approx(ba)
    assert balanced_accuracy(labels, scores, 0.5) == pytest.approx(0.5 * (0.5 + 7 / 8))


def test_summary_reports_each_source():
    result = summary([0, 1, 0, 1], [0.1, 0.9, 0.7, 0.8], ["a", "a", "b", "b"], 0.5)
    assert result["per_source"]["a"]["balanced_accuracy"] == 1.0
    assert result["per_source"]["b"]["balanced_accuracy"] == 0.5
    assert result["all"]["n"] == 4 and result["all"]["n_atypical"] == 2
