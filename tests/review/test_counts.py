"""Counts per HPF, per 10 HPF and per 2 mm², the hotspot, and the scaled Nottingham mitotic score."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from midog_viewer.errors import ReviewStoreError
from midog_viewer.review import ReviewStore
from midog_viewer.review.counts import (
    count_slide,
    hpf_size_px,
    mitotic_score,
    write_counts_csv,
)

MPP = 0.25


def box_at(x, y, size=50):
    return [x - size / 2, y - size / 2, x + size / 2, y + size / 2]


@pytest.fixture
def store(tmp_path):
    with ReviewStore(tmp_path / "c.db", reviewer="t") as s:
        yield s


def test_hpf_size_has_the_area_and_aspect():
    w, h = hpf_size_px(0.237, MPP)
    assert math.isclose(w * h * (MPP / 1000) ** 2, 0.237)
    assert math.isclose(w / h, 4 / 3)


@pytest.mark.parametrize(
    ("hpf_mm2", "count", "score", "score_1_max", "score_3_min"),
    [
        (0.274, 9, 1, 9, 20), (0.274, 10, 2, 9, 20), (0.274, 19, 2, 9, 20), (0.274, 20, 3, 9, 20),
        (0.237, 8, 1, 8, 18), (0.237, 9, 2, 8, 18), (0.237, 17, 2, 8, 18), (0.237, 18, 3, 8, 18),
    ],
)
def test_mitotic_score_thresholds_scale_with_field_area(hpf_mm2, count, score, score_1_max, score_3_min):
    result = mitotic_score(count, hpf_mm2)
    assert (result.score, result.score_1_max, result.score_3_min) == (score, score_1_max, score_3_min)
    assert f"{hpf_mm2:g}" in result.scaling and "0.274" in result.scaling


def test_grid_counts_by_status(store):
    w, h = hpf_size_px(0.237, MPP)
    slide_id = store.add_slide("s.tiff", MPP, int(2 * w), int(h))  # exactly two fields side by side
    run = store.add_detection_run(slide_id, "m", {})
    centres = [(100, 100), (200, 100), (300, 100), (w + 100, 100), (w + 200, 100)]
    ids = store.add_detections(run, np.array([box_at(*c) for c in centres]), [0.9] * 5,
                               ["mitotic figure"] * 4 + ["hard negative"])
    store.decide(int(ids[0]), "accept")
    store.decide(int(ids[1]), "reject")
    store.decide(int(ids[3]), "relabel", label="hard negative")
    store.add_annotations(slide_id, np.array([box_at(w + 300, 200)]), ["mitotic figure"], "gt.json")
    store.add_annotation(slide_id, box_at(400, 300), "mitotic figure")
    counts = count_slide(store, slide_id)
    assert counts.field_source == "grid" and len(counts.fields) == 2
    left, right = counts.fields
    assert (left.accepted, left.ground_truth, left.pending, left.rejected, left.mitoses) == (2, 0, 1, 1, 2)
    assert (right.accepted, right.ground_truth, right.pending, right.rejected, right.mitoses) == (0, 1, 0, 1, 1)
    assert math.isclose(counts.area_mm2, 2 * 0.237, rel_tol=1e-3)
    assert math.isclose(counts.per_2_mm2, 3 / counts.area_mm2 * 2)
    assert math.isclose(counts.per_10_hpf, 3 / counts.area_mm2 * 2.37)
    with_pending = count_slide(store, slide_id, count_pending=True)
    assert with_pending.totals["mitoses"] == 4


def test_edge_fields_keep_their_true_area(store):
    w, h = hpf_size_px(0.237, MPP)
    slide_id = store.add_slide("edge.tiff", MPP, int(1.5 * w), int(h))
    counts = count_slide(store, slide_id)
    assert len(counts.fields) == 2
    assert math.isclose(counts.fields[1].area_mm2, 0.237 * (int(1.5 * w) - w) / w, rel_tol=1e-3)


def test_drawn_hpfs_take_precedence_and_give_the_score(store):
    slide_id = store.add_slide("d.tiff", MPP, 20_000, 20_000)
    w, h = hpf_size_px(0.237, MPP)
    store.add_annotations(slide_id, np.array([box_at(100 + 60 * i, 100) for i in range(5)]), ["mitotic figure"] * 5, "gt")
    store.add_hpf(slide_id, (0, 0, w, h))
    counts = count_slide(store, slide_id)
    assert counts.field_source == "drawn" and len(counts.fields) == 1 and counts.fields[0].mitoses == 5
    assert math.isclose(counts.per_10_hpf, 50.0, rel_tol=1e-6)  # 5 in one HPF → 50 per 10 HPF
    assert counts.mitotic_score.score == 3
    assert count_slide(store, slide_id, use_drawn=False).field_source == "grid"


def test_hotspot_finds_the_dense_window(store):
    slide_id = store.add_slide("h.tiff", MPP, 40_000, 40_000)
    rng = np.random.default_rng(0)
    sparse = rng.uniform(0, 40_000, size=(30, 2))
    # 40 distinct cells (a jittered grid 125 px = 31 µm apart): random points would put some within 7.5 µm,
    # which are one mitosis
    grid = np.stack(np.meshgrid(np.arange(8), np.arange(5)), axis=-1).reshape(-1, 2)
    dense = 25_050 + grid * 125 + rng.uniform(-20, 20, size=(40, 2))
    points = np.vstack([sparse, dense])
    store.add_annotations(slide_id, np.array([box_at(x, y) for x, y in points]), ["mitotic figure"] * 70, "gt")
    counts = count_slide(store, slide_id)
    hot = counts.hotspot
    assert hot.mitoses >= 40
    assert hot.x <= 25_000 and hot.x + hot.w >= 26_000 and hot.y <= 25_000 and hot.y + hot.h >= 26_000
    assert math.isclose(hot.area_mm2, 2.37, rel_tol=1e-6)
    inside = ((points[:, 0] >= hot.x) & (points[:, 0] < hot.x + hot.w)
              & (points[:, 1] >= hot.y) & (points[:, 1] < hot.y + hot.h)).sum()
    assert hot.mitoses == inside
    assert counts.mitotic_score.score == 3
    two_mm2 = count_slide(store, slide_id, window="2mm2").hotspot
    assert math.isclose(two_mm2.area_mm2, 2.0, rel_tol=1e-6)


def test_counts_csv_has_one_row_per_hpf(store, tmp_path):
    slide_id = store.add_slide("csv.tiff", MPP, 10_000, 8_000)
    counts = count_slide(store, slide_id, hpf_mm2=0.5)
    write_counts_csv(tmp_path / "counts.csv", [counts])
    rows = list(csv.DictReader((tmp_path / "counts.csv").open()))
    assert len(rows) == len(counts.fields) > 1
    assert {"slide", "hpf_id", "x", "y", "w_px", "h_px", "area_mm2", "accepted", "pending", "rejected"} <= set(rows[0])
    assert math.isclose(sum(float(r["area_mm2"]) for r in rows), 10_000 * 8_000 * (MPP / 1000) ** 2, rel_tol=1e-4)


def test_counts_need_a_pixel_size(store):
    slide_id = store.add_slide("nompp.tiff", None, 1000, 1000)
    with pytest.raises(ReviewStoreError, match="pixel size"):
        count_slide(store, slide_id)
    assert count_slide(store, slide_id, mpp=0.25).mpp == 0.25
    with pytest.raises(ReviewStoreError):
        count_slide(store, slide_id, mpp=0.25, hpf_mm2=0)
    with pytest.raises(ReviewStoreError):
        count_slide(store, slide_id, mpp=0.25, window="5hpf")


def _ground_truth_with_reviews_on_top(store):
    """8 imported mitoses; 2 detections accepted on 2 of them, 1 added by hand on a third (the demo's case)."""
    slide_id = store.add_slide("gt.tiff", MPP, 20_000, 20_000)
    truth = [(1000 + 700 * i, 1000 + 300 * i) for i in range(8)]
    store.add_annotations(slide_id, np.array([box_at(*c) for c in truth]), ["mitotic figure"] * 8, "MIDOG.json")
    run = store.add_detection_run(slide_id, "m", {})
    on_truth = [(truth[0][0] + 8, truth[0][1] - 6), (truth[1][0] - 20, truth[1][1])]  # 2.5 µm and 5 µm away
    ids = store.add_detections(run, np.array([box_at(*c, size=60) for c in on_truth]), [0.9, 0.8], ["mitotic figure"] * 2)
    for object_id in ids:
        store.decide(int(object_id), "accept")
    store.add_annotation(slide_id, box_at(truth[2][0], truth[2][1] + 29), "mitotic figure")  # 7.25 µm away
    return slide_id, truth


def test_an_accepted_detection_on_a_ground_truth_mitosis_is_one_mitosis(store, tmp_path):
    slide_id, truth = _ground_truth_with_reviews_on_top(store)
    counts = count_slide(store, slide_id)
    assert counts.totals["mitoses"] == 8  # was 11: each review on top of a label counted again
    assert (counts.totals["ground_truth"], counts.totals["accepted"]) == (8, 0)
    assert counts.hotspot.mitoses == 8
    assert math.isclose(counts.per_2_mm2, 8 / counts.area_mm2 * 2)
    write_counts_csv(tmp_path / "counts.csv", [counts])
    assert sum(int(r["mitoses"]) for r in csv.DictReader((tmp_path / "counts.csv").open())) == 8
    w, h = hpf_size_px(0.237, MPP)
    store.add_hpf(slide_id, (0, 0, w, h))
    drawn = count_slide(store, slide_id)
    inside = sum(1 for x, y in truth if x < w and y < h)
    assert drawn.totals["mitoses"] == inside and drawn.mitotic_score.count_per_10_hpf == pytest.approx(10 * inside)


def test_reviews_beyond_the_radius_are_new_mitoses(store):
    slide_id, truth = _ground_truth_with_reviews_on_top(store)
    store.add_annotation(slide_id, box_at(truth[3][0] + 31, truth[3][1]), "mitotic figure")  # 7.75 µm: another cell
    run = store.add_detection_run(slide_id, "m", {})
    far = store.add_detections(run, np.array([box_at(15_000, 15_000)]), [0.9], ["mitotic figure"])
    store.decide(int(far[0]), "accept")
    counts = count_slide(store, slide_id)
    assert (counts.totals["mitoses"], counts.totals["ground_truth"], counts.totals["accepted"]) == (10, 8, 2)


def _candidates(store, params):
    """Four pending mitotic-figure candidates scoring 0.12, 0.3, 0.6 and 0.9, stored down to the dock's 0.10."""
    slide_id = store.add_slide("p.tiff", MPP, 8_000, 8_000)
    run = store.add_detection_run(slide_id, "m", params)
    store.add_detections(run, np.array([box_at(500 + 500 * i, 500) for i in range(4)]), [0.12, 0.3, 0.6, 0.9],
                         ["mitotic figure"] * 4)
    return slide_id


def test_pending_means_pending_at_the_operating_threshold(store, tmp_path):
    slide_id = _candidates(store, {"score_thr": 0.1})  # what the dock records: the floor, not the operating point
    counts = count_slide(store, slide_id, count_pending=True)
    assert counts.score_thr == 0.5  # the detector's default when the run recorded no operating threshold
    assert (counts.totals["pending"], counts.totals["mitoses"]) == (2, 2)  # was 4: every candidate down to 0.10
    write_counts_csv(tmp_path / "counts.csv", [counts])
    assert sum(int(r["pending"]) for r in csv.DictReader((tmp_path / "counts.csv").open())) == 2
    given = count_slide(store, slide_id, count_pending=True, score_thr=0.25)
    assert (given.totals["pending"], given.totals["mitoses"], given.score_thr) == (3, 3, 0.25)
    assert count_slide(store, slide_id, score_thr=0.0).totals["pending"] == 4
    with pytest.raises(ReviewStoreError, match="between 0 and 1"):
        count_slide(store, slide_id, score_thr=1.5)


def test_the_operating_threshold_a_run_recorded_is_used(store):
    slide_id = _candidates(store, {"score_thr": 0.1, "operating_thr": 0.7})
    assert count_slide(store, slide_id).totals["pending"] == 1


def test_a_marked_hpf_counts_only_its_area_inside_the_image(store):
    px_mm2 = (MPP / 1000) ** 2
    slide_id = store.add_slide("small.tiff", MPP, 1000, 800)
    store.add_annotations(slide_id, np.array([box_at(100, 100), box_at(900, 700)]), ["mitotic figure"] * 2, "gt")
    w, h = hpf_size_px(0.237, MPP)  # 2000 x 1500 px: larger than the image
    store.add_hpf(slide_id, (-500, -300, w, h))
    counts = count_slide(store, slide_id)
    (hpf,) = counts.fields
    assert (hpf.x, hpf.y, hpf.w, hpf.h) == (0, 0, 1000, 800)
    assert math.isclose(hpf.area_mm2, 1000 * 800 * px_mm2)  # was the whole 0.237 mm²
    assert math.isclose(counts.per_10_hpf, 2 / (1000 * 800 * px_mm2) * 2.37)
    part = store.add_hpf(slide_id, (600, 400, 1000, 1000))  # partly outside: 400 x 400 px inside
    store.delete_hpf(store.hpf_regions(slide_id)[0].id)
    (hpf,) = count_slide(store, slide_id).fields
    assert hpf.hpf_id == f"hpf{part}" and math.isclose(hpf.area_mm2, 400 * 400 * px_mm2) and hpf.mitoses == 1
    # a region (the dock's current-HPF and view rows) partly outside is clipped too
    in_view = count_slide(store, slide_id, region=(500, 400, 2000, 2000), use_drawn=False)
    assert math.isclose(in_view.area_mm2, 500 * 400 * px_mm2) and in_view.totals["mitoses"] == 1


def test_without_a_recorded_threshold_the_run_models_own_is_used(tmp_path):
    from midog_viewer.detect.engine import DEMO_MODEL_PATH

    if not DEMO_MODEL_PATH.is_file():
        pytest.skip("the demo model is not built")
    (tmp_path / "garbage.safetensors").write_bytes(b"\xff" * 64)
    expected = {str(DEMO_MODEL_PATH): 0.9,  # the demo model's operating point, where the dock's slider starts
                str(tmp_path / "moved.safetensors"): 0.5, str(tmp_path / "garbage.safetensors"): 0.5}
    for model, threshold in expected.items():
        with ReviewStore(tmp_path / f"{threshold}-{Path(model).name}.db", reviewer="t") as store:
            slide_id = store.add_slide("p.tiff", MPP, 8_000, 8_000)
            run = store.add_detection_run(slide_id, model, {"score_thr": 0.1})
            store.add_detections(run, np.array([box_at(500 + 500 * i, 500) for i in range(3)]), [0.3, 0.6, 0.95],
                                 ["mitotic figure"] * 3)
            counts = count_slide(store, slide_id)
            assert counts.score_thr == threshold and counts.totals["pending"] == (1 if threshold == 0.9 else 2)


def test_counts_from_rows_read_once_equal_counts_that_read_them(store, monkeypatch):
    """The dock's refresh reads a slide's rows once for its four counts: the same figures, no further read."""
    slide_id = store.add_slide("s.tiff", MPP, 4000, 3000)
    run = store.add_detection_run(slide_id, "m", {})
    ids = store.add_detections(run, np.array([box_at(100 + 300 * k, 200) for k in range(6)]), [0.95] * 6,
                               ["mitotic figure"] * 6)
    store.decide(int(ids[0]), "accept")
    store.decide(int(ids[1]), "reject")
    store.add_annotation(slide_id, box_at(2500, 2500), "mitotic figure")
    region = (0.0, 0.0, 1500.0, 1500.0)
    read = count_slide(store, slide_id, region=region, use_drawn=False)
    objects = store.objects(slide_id)
    monkeypatch.setattr(store, "objects", lambda *a, **k: pytest.fail("the rows were read again"))
    given = count_slide(store, slide_id, region=region, use_drawn=False, objects=objects)
    assert given.totals == read.totals and given.per_10_hpf == read.per_10_hpf
    assert given.hotspot == read.hotspot and read.totals["mitoses"] == 1
