"""The batch parts that need no cluster: slide discovery, work units, the tile ledger, the report."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from midog_viewer.batch.ledger import Ledger
from midog_viewer.batch.plan import find_slides, work_units
from midog_viewer.batch.report import COLUMNS, SlideRow, counted_row, write_report
from midog_viewer.batch.run import _fresh, describe, run_key
from midog_viewer.errors import MidogError, ReviewStoreError, SlideError
from midog_viewer.review.status import Verdict
from midog_viewer.review.store import ReviewStore


def _plan(tiles=4, thr=0.9):
    return {"tiles": [[0, 0, 512, 512]] * tiles, "cores": [[0, 0, 1, 1]] * tiles, "tissue_fraction": 0.5,
            "tissue_box": None, "score_thr": thr, "od_matrix": None, "zoom": 1.0}


def test_folders_give_their_slides_and_dicom_folders_but_not_other_files(tmp_path):
    (tmp_path / "a.svs").write_bytes(b"x")
    (tmp_path / "b.TIFF").write_bytes(b"x")
    (tmp_path / "cohort.db").write_bytes(b"x")
    (tmp_path / "dicom").mkdir()
    (tmp_path / "dicom" / "1.dcm").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    found = find_slides([tmp_path, tmp_path / "a.svs"])
    assert [p.name for p in found] == ["a.svs", "b.TIFF", "dicom"]  # named twice, listed once
    with pytest.raises(MidogError, match="does not exist"):
        find_slides([tmp_path / "missing.svs"])
    with pytest.raises(MidogError, match="holds no slides"):
        find_slides([tmp_path / "empty"])


def test_work_units_cut_pending_tiles_in_plan_order():
    assert work_units([5, 0, 3, 1, 2], size=2) == [[0, 1], [2, 3], [5]]
    assert work_units([]) == []


def test_run_key_changes_with_the_model_and_threshold(tmp_path):
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"x")
    assert run_key(str(model), 0.5) == run_key(str(model), 0.5)
    assert run_key(str(model), 0.5) != run_key(str(model), 0.6) != run_key(None, 0.6)


def test_a_failure_is_one_line_with_its_type_unless_it_is_ours():
    assert describe(SlideError("x.svs is broken.")) == "x.svs is broken."
    assert describe(ValueError("bad\ntraceback")) == "ValueError: bad"


def test_boxes_repeating_an_earlier_batch_are_dropped():
    earlier = np.array([[0, 0, 50, 50]], np.float32)
    boxes = np.array([[2, 2, 52, 52], [2, 2, 52, 52], [300, 300, 350, 350]], np.float32)
    labels = ["mitotic figure", "hard negative", "mitotic figure"]
    assert _fresh(boxes, labels, earlier, ["mitotic figure"]).tolist() == [False, True, True]


def test_ledger_records_finished_tiles_with_their_detections_in_one_transaction(tmp_path):
    with ReviewStore(tmp_path / "r.db") as store:
        ledger = Ledger(store)
        slide_id = store.add_slide(tmp_path / "s.tiff", 0.25, 1000, 800)
        assert ledger.latest(slide_id, "k") is None
        run = ledger.start(slide_id, "k", "demo", {"tissue_fraction": 0.5}, _plan())
        assert store.detection_runs(slide_id)[0]["params"]["tissue_fraction"] == 0.5
        ledger.commit_tiles(run, [0, 1], np.array([[10, 10, 60, 60]]), np.array([0.95]), ["mitotic figure"])
        with pytest.raises(ReviewStoreError):  # a NaN score: neither the detections nor the tiles are stored
            ledger.commit_tiles(run, [2], np.array([[0, 0, 5, 5]]), np.array([np.nan]), ["mitotic figure"])
        run.done.discard(2)
    with ReviewStore(tmp_path / "r.db") as store:  # what a resume sees
        resumed = Ledger(store).latest(slide_id, "k")
        assert resumed.done == {0, 1} and not resumed.finished and resumed.plan["tiles"] == _plan()["tiles"]
        assert len(store.objects(slide_id, run_id=resumed.run_id)) == 1
        Ledger(store).finish(resumed)
        assert Ledger(store).latest(slide_id, "k").finished
        assert Ledger(store).latest(slide_id, "other settings") is None


def test_report_counts_at_the_operating_threshold_and_keeps_reviewed_detections(tmp_path):
    with ReviewStore(tmp_path / "r.db") as store:
        slide_id = store.add_slide(tmp_path / "s.tiff", 0.25, 2000, 1500)
        run_id = store.add_detection_run(slide_id, "demo", {})
        boxes = np.array([[100, 100, 150, 150], [400, 400, 450, 450], [800, 800, 850, 850], [900, 100, 950, 150]])
        ids = store.add_detections(run_id, boxes, np.array([0.95, 0.5, 0.4, 0.97]),
                                   ["mitotic figure", "mitotic figure", "mitotic figure", "hard negative"])
        store.decide(int(ids[2]), Verdict.ACCEPT)  # a reviewer's yes counts below the threshold
        row = counted_row(store, slide_id, "s.tiff", "done", _plan(thr=0.9), 1.234)
    assert row.mitoses == 2 and row.tiles == 4 and row.tissue_fraction == 0.5 and row.seconds == 1.23
    assert row.hotspot_count == 2 and row.mitotic_score in (1, 2, 3) and row.per_10_hpf > 0


def test_report_is_replaced_atomically_and_leaves_nothing_behind(tmp_path, monkeypatch):
    report = tmp_path / "report.csv"
    write_report(report, [SlideRow("a.svs", "done", tiles=3), SlideRow("b.svs", "failed", "b.svs is broken.")])
    rows = list(csv.DictReader(report.open()))
    assert tuple(rows[0]) == COLUMNS and [r["status"] for r in rows] == ["done", "failed"]
    before = report.read_bytes()

    def refuse(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("midog_viewer.formats.atomic.os.replace", refuse)  # the report goes through atomic
    with pytest.raises((OSError, MidogError)):
        write_report(report, [SlideRow("c.svs", "done")])
    assert report.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["report.csv"]


def test_ledger_stores_p_atypical_and_the_runs_threshold(tmp_path):
    with ReviewStore(tmp_path / "r.db") as store:
        ledger = Ledger(store)
        slide_id = store.add_slide(tmp_path / "s.tiff", 0.25, 1000, 800)
        run = ledger.start(slide_id, "k", "demo", {}, _plan(), atypical_threshold=0.4)
        boxes = np.array([[10, 10, 60, 60], [100, 100, 150, 150]])
        ledger.commit_tiles(run, [0], boxes, np.array([0.95, 0.9]), ["mitotic figure"] * 2, np.array([0.5, 0.3]))
        table = store.objects(slide_id)
        assert table.p_atypical.tolist() == [0.5, 0.3] and table.atypical.tolist() == [1, 0]


def test_detect_task_gives_each_mitotic_figure_p_atypical_from_the_shipped_classifier(monkeypatch):
    from midog_viewer.atypical import atypical_scores, shared_classifier
    from midog_viewer.batch import worker
    from midog_viewer.detect.detections import Detections
    from midog_viewer.synthetic import make_hpf

    image = make_hpf(seed=1, width=256, height=256).image

    class _Slide:
        mpp = 0.25

        def read_region(self, x, y, w, h):
            out = np.zeros((h, w, 3), np.uint8)
            x0, y0 = max(x, 0), max(y, 0)
            part = image[y0:y + h, x0:x + w]
            out[y0 - y:y0 - y + part.shape[0], x0 - x:x0 - x + part.shape[1]] = part
            return out

    found = Detections(np.array([[100, 100, 150, 150], [10, 10, 60, 60]], np.float32), np.array([0.9, 0.8], np.float32),
                       np.array([0, 1]))

    class _Plugin:
        detector = type("D", (), {"detect_tiles": staticmethod(lambda *a: found)})()
        classifier = shared_classifier()

        def slide(self, path):
            return _Slide()

    monkeypatch.setattr(worker, "_plugin", lambda name: _Plugin())
    boxes, scores, labels, p = worker.detect_task("x", "s.tiff", [[0, 0, 256, 256]], [[0, 0, 256, 256]], None, 1.0)
    assert labels[0] == "mitotic figure" and 0 <= p[0] <= 1 and np.isnan(p[1])  # the other class: none
    assert p[0] == atypical_scores(_Slide(), found, shared_classifier())[0]  # as `detect` computes it
