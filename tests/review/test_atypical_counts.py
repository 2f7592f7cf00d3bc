"""Atypical mitoses counted: per HPF, per 10 HPF, per 2 mm², the share, one figure one subtype."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from midog_viewer.review import ReviewStore
from midog_viewer.review.counts import count_slide, write_counts_csv

MPP = 0.25


@pytest.fixture
def store(tmp_path):
    with ReviewStore(tmp_path / "r.db", reviewer="alice") as s:
        yield s


def _accepted(store, slide_id, boxes, p):
    run = store.add_detection_run(slide_id, "m", {"operating_thr": 0.5}, atypical_threshold=0.5)
    ids = [int(i) for i in store.add_detections(run, boxes, [0.9] * len(boxes), ["mitotic figure"] * len(boxes), p)]
    for i in ids:
        store.decide(i, "accept")
    return ids


def test_atypical_densities_and_share_follow_the_models_call_and_the_reviewer(store, tmp_path):
    slide_id = store.add_slide("a.tiff", MPP, 4000, 3000)
    boxes = np.array([[0, 0, 50, 50], [1000, 1000, 1050, 1050], [2000, 2000, 2050, 2050]], float)
    a, b, c = _accepted(store, slide_id, boxes, [0.9, 0.1, 0.8])
    counts = count_slide(store, slide_id)
    assert (counts.totals["mitoses"], counts.totals["atypical"]) == (3, 2)
    assert counts.atypical_share == pytest.approx(2 / 3)
    area = 4000 * 3000 * (MPP / 1000) ** 2
    assert counts.atypical_per_hpf == pytest.approx(2 / area * counts.hpf_mm2)
    assert counts.atypical_per_10_hpf == pytest.approx(10 * counts.atypical_per_hpf)
    assert counts.atypical_per_2_mm2 == pytest.approx(2 / area * 2)
    store.decide_subtype("detection", b, True)
    assert count_slide(store, slide_id).totals["atypical"] == 3
    store.decide(a, "reject")  # a rejected figure is no mitosis, so no atypical one
    again = count_slide(store, slide_id)
    assert (again.totals["mitoses"], again.totals["atypical"], again.atypical_share) == (2, 2, 1.0)
    assert again.as_json()["atypical_share"] == 1.0
    write_counts_csv(tmp_path / "c.csv", [again])
    rows = list(csv.DictReader((tmp_path / "c.csv").open()))
    assert sum(int(r["atypical"]) for r in rows) == 2


def test_a_merged_figure_has_one_subtype_the_reviewers_first_then_the_files_then_the_models(store):
    slide_id = store.add_slide("b.tiff", MPP, 1000, 1000)
    store.add_annotations(slide_id, [[100, 100, 150, 150], [500, 500, 550, 550]], ["mitotic figure"] * 2,
                          "truth.json", atypical=[0, None])
    # an accepted detection on each ground-truth figure, both called atypical by the model
    d1, d2 = _accepted(store, slide_id, np.array([[102, 102, 152, 152], [502, 502, 552, 552]], float), [0.9, 0.9])
    counts = count_slide(store, slide_id)
    assert (counts.totals["mitoses"], counts.totals["atypical"]) == (2, 1)  # the file said normal; the other: model
    store.decide_subtype("detection", d1, True)  # a reviewer's decision on any member wins
    assert count_slide(store, slide_id).totals["atypical"] == 2
    store.decide_subtype("detection", d2, False)
    assert count_slide(store, slide_id).totals["atypical"] == 1
    assert store.undo(slide_id) == d2 and count_slide(store, slide_id).totals["atypical"] == 2


def test_no_mitoses_no_share(store):
    slide_id = store.add_slide("c.tiff", MPP, 1000, 1000)
    counts = count_slide(store, slide_id)
    assert counts.atypical_share is None and counts.atypical_per_10_hpf == 0.0
