"""The review store: slides, detections, the append-only decision log, undo/redo, regions, bad input."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from midog_viewer.errors import MidogError, ReviewStoreError
from midog_viewer.review import ReviewStore, Status, Verdict
from midog_viewer.review.store import SCHEMA_VERSION

BOXES = np.array([[0, 0, 50, 50], [100, 100, 150, 150], [500, 500, 550, 550]], dtype=float)


@pytest.fixture
def store(tmp_path):
    with ReviewStore(tmp_path / "review.db", reviewer="alice") as s:
        yield s


@pytest.fixture
def slide_with_detections(store):
    slide_id = store.add_slide("a.tiff", 0.25, 1000, 1000)
    run_id = store.add_detection_run(slide_id, "cascade-r18", {"threshold": 0.5})
    ids = store.add_detections(run_id, BOXES, [0.9, 0.8, 0.7], ["mitotic figure", "Mitose", "hard negative"])
    return slide_id, run_id, ids


def state(store, slide_id):
    table = store.objects(slide_id, include_deleted=True)
    return {(k, int(i)): (s, lab) for k, i, s, lab in zip(table.kind, table.id, table.status, table.label)}


def test_fresh_store_is_wal_with_schema_version(store):
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    assert store.integrity_check() == "ok"


def test_add_slide_is_idempotent_and_binds_names_to_files(store, tmp_path):
    by_name = store.add_slide("001.tiff", None, None, None)
    assert store.add_slide("001.tiff") == by_name
    image = tmp_path / "001.tiff"
    image.write_bytes(b"not really a tiff")
    assert store.add_slide(image, 0.23, 10, 20) == by_name  # the name-only slide is bound to the real file
    slide = store.slide(by_name)
    assert slide.path == str(image.resolve()) and slide.mpp == 0.23 and (slide.width, slide.height) == (10, 20)
    assert store.add_slide(image) == by_name
    assert len(store.slides()) == 1


def test_detections_get_ids_and_pending_status(store, slide_with_detections):
    slide_id, run_id, ids = slide_with_detections
    assert ids.dtype == np.int64 and ids.tolist() == [1, 2, 3]
    table = store.objects(slide_id)
    assert table.status.tolist() == [Status.PENDING] * 3
    assert table.label.tolist() == ["mitotic figure", "mitotic figure", "hard negative"]
    assert table.colours() == ["yellow"] * 3
    np.testing.assert_array_equal(table.boxes, BOXES)
    np.testing.assert_allclose(table["score"], [0.9, 0.8, 0.7])
    assert store.detection_runs(slide_id)[0]["params"] == {"threshold": 0.5}


def test_decisions_set_status_and_colour_with_who_and_when(store, slide_with_detections):
    slide_id, _, ids = slide_with_detections
    store.decide(int(ids[0]), Verdict.ACCEPT)
    store.decide(int(ids[1]), "reject", reviewer="bob")
    store.decide(int(ids[2]), Verdict.RELABEL, label="mitosis")
    table = store.objects(slide_id)
    assert table.status.tolist() == ["accepted", "rejected", "accepted"]
    assert table.label.tolist()[2] == "mitotic figure"
    assert table.colours() == ["white", "red", "white"]
    log = store.decisions(slide_id)
    assert [d.reviewer for d in log] == ["alice", "bob", "alice"]
    assert all(d.decided_at.endswith("Z") for d in log)


def test_relabel_to_hard_negative_is_red(store, slide_with_detections):
    slide_id, _, ids = slide_with_detections
    store.decide(int(ids[0]), Verdict.RELABEL, label="Nonmitosis")
    table = store.objects(slide_id)
    assert (table.status[0], table.label[0], table.colours()[0]) == ("relabelled", "hard negative", "red")


def test_undo_redo_append_to_the_log_and_never_lose_history(store, slide_with_detections):
    slide_id, _, ids = slide_with_detections
    store.decide(int(ids[0]), "accept")
    store.decide(int(ids[0]), "reject")
    assert store.undo(slide_id) == ids[0]
    assert state(store, slide_id)[("detection", 1)][0] == "accepted"
    assert store.undo(slide_id) == ids[0]
    assert state(store, slide_id)[("detection", 1)][0] == "pending"
    assert store.undo(slide_id) is None
    assert store.redo(slide_id) == ids[0]
    assert state(store, slide_id)[("detection", 1)][0] == "accepted"
    store.decide(int(ids[1]), "accept")  # a new decision clears the redo stack
    assert store.redo(slide_id) is None
    verdicts = [d.verdict for d in store.decisions(slide_id)]
    assert verdicts == [Verdict.ACCEPT, Verdict.REJECT, Verdict.UNDO, Verdict.UNDO, Verdict.REDO, Verdict.ACCEPT]


def test_log_is_append_only(store, slide_with_detections):
    slide_id, _, ids = slide_with_detections
    store.decide(int(ids[0]), "accept")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store._db.execute("UPDATE decisions SET verdict = 'reject'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store._db.execute("DELETE FROM decisions")


def test_hand_annotations_add_delete_undo(store, slide_with_detections):
    slide_id, _, _ = slide_with_detections
    annotation = store.add_annotation(slide_id, [10, 10, 60, 60], "Mitosis")
    assert state(store, slide_id)[("annotation", annotation)] == ("accepted", "mitotic figure")
    store.delete_annotation(annotation)
    assert ("annotation", annotation) not in {(k, int(i)) for k, i in zip(store.objects(slide_id).kind, store.objects(slide_id).id)}
    assert state(store, slide_id)[("annotation", annotation)][0] == "deleted"
    with pytest.raises(ReviewStoreError, match="already deleted"):
        store.delete_annotation(annotation)
    assert store.undo(slide_id) == annotation  # undo the delete
    assert state(store, slide_id)[("annotation", annotation)][0] == "accepted"
    assert store.undo(slide_id) == annotation  # undo the add: gone
    assert state(store, slide_id)[("annotation", annotation)][0] == "deleted"
    assert store.redo(slide_id) == annotation
    assert state(store, slide_id)[("annotation", annotation)][0] == "accepted"


def test_imported_annotations_are_ground_truth(store):
    slide_id = store.add_slide("b.tiff")
    ids = store.add_annotations(slide_id, BOXES[:2], ["mitotic figure", "not mitotic figure"], "MIDOG.json")
    table = store.objects(slide_id)
    assert table.status.tolist() == ["ground truth"] * 2 and table.colours() == ["white"] * 2
    assert table.label.tolist() == ["mitotic figure", "hard negative"]
    assert store.annotation_sources() == {"MIDOG.json": 2}
    store.delete_annotation(int(ids[0]))
    assert len(store.objects(slide_id)) == 1


def test_rebuild_state_from_log_matches_cached_state(store, slide_with_detections):
    slide_id, _, ids = slide_with_detections
    store.decide(int(ids[0]), "accept")
    store.decide(int(ids[1]), "relabel", label="hard negative")
    annotation = store.add_annotation(slide_id, [1, 1, 5, 5], "mitotic figure")
    store.delete_annotation(annotation)
    store.undo(slide_id)
    store.undo(slide_id)
    store.decide(int(ids[2]), "reject")
    before = state(store, slide_id)
    store.rebuild_state()
    assert state(store, slide_id) == before


def test_region_query_returns_touching_objects(store, slide_with_detections):
    slide_id, _, _ = slide_with_detections
    other = store.add_slide("other.tiff")
    store.add_annotations(other, BOXES, ["mitotic figure"] * 3, "x.csv")
    table = store.objects(slide_id, region=(90, 90, 20, 20))
    assert table.id.tolist() == [2] and table.kind.tolist() == ["detection"]
    assert len(store.objects(slide_id, region=(0, 0, 1000, 1000))) == 3
    assert len(store.objects(slide_id, region=(600, 600, 10, 10))) == 0
    assert len(store.objects(slide_id, region=(550, 550, 0, 0))) == 1  # touching the corner counts


def test_empty_batches_are_fine(store, slide_with_detections):
    _, run_id, _ = slide_with_detections
    ids = store.add_detections(run_id, np.zeros((0, 4)), np.zeros(0), [])
    assert ids.dtype == np.int64 and len(ids) == 0
    assert len(store.objects(store.add_slide("empty.tiff"))) == 0


def test_objects_by_run(store, slide_with_detections):
    slide_id, run_id, _ = slide_with_detections
    second = store.add_detection_run(slide_id, "other", {})
    store.add_detections(second, BOXES[:1], [0.5], ["mitotic figure"])
    assert len(store.objects(slide_id)) == 4
    assert store.objects(slide_id, run_id=second).id.tolist() == [4]


def test_hpf_regions(store, slide_with_detections):
    slide_id, _, _ = slide_with_detections
    hpf = store.add_hpf(slide_id, (0, 0, 2000, 1500))
    assert [(r.x, r.y, r.w, r.h) for r in store.hpf_regions(slide_id)] == [(0, 0, 2000, 1500)]
    store.delete_hpf(hpf)
    assert store.hpf_regions(slide_id) == []
    with pytest.raises(ReviewStoreError):
        store.delete_hpf(hpf)


@pytest.mark.parametrize(
    "call",
    [
        lambda s, ids: s.decide(999, "accept"),
        lambda s, ids: s.decide(int(ids[0]), "maybe"),
        lambda s, ids: s.decide(int(ids[0]), "relabel"),
        lambda s, ids: s.decide(int(ids[0]), "add"),
        lambda s, ids: s.add_detections(1, np.array([[0, 0, 1]]), [0.5], ["mitotic figure"]),
        lambda s, ids: s.add_detections(1, np.array([[5, 0, 1, 1]]), [0.5], ["mitotic figure"]),
        lambda s, ids: s.add_detections(1, np.array([[0, 0, np.nan, 1]]), [0.5], ["mitotic figure"]),
        lambda s, ids: s.add_detections(1, BOXES, [0.5], ["mitotic figure"]),
        lambda s, ids: s.add_detections(42, BOXES, [0.5] * 3, ["mitotic figure"] * 3),
        lambda s, ids: s.add_detection_run(1, "m", {"f": object()}),
        lambda s, ids: s.add_slide("x.tiff", -1.0),
        lambda s, ids: s.objects(1, region=(0, 0, -5, 5)),
        lambda s, ids: s.slide(77),
        lambda s, ids: s.delete_annotation(5),
    ],
)
def test_bad_input_raises_one_clear_error(store, slide_with_detections, call):
    _, _, ids = slide_with_detections
    before = store.decisions()
    with pytest.raises(ReviewStoreError) as info:
        call(store, ids)
    assert isinstance(info.value, MidogError) and str(info.value).endswith(".")
    assert store.decisions() == before
    assert len(store.objects(1)) == 3


def test_not_a_database_or_foreign_or_newer_schema(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(ReviewStoreError, match="not a usable review database"):
        ReviewStore(junk)
    foreign = tmp_path / "foreign.db"
    sqlite3.connect(foreign).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(ReviewStoreError, match="not a midog-viewer review store"):
        ReviewStore(foreign)
    newer = tmp_path / "newer.db"
    ReviewStore(newer).close()
    db = sqlite3.connect(newer)
    db.execute("UPDATE schema_version SET version = 99")
    db.commit()
    db.close()
    with pytest.raises(ReviewStoreError, match="newer"):
        ReviewStore(newer)
    with pytest.raises(ReviewStoreError, match="folder"):
        ReviewStore(tmp_path)


def test_reopen_keeps_everything(tmp_path):
    path = tmp_path / "r.db"
    with ReviewStore(path, reviewer="alice") as store:
        slide_id = store.add_slide("a.tiff", 0.25)
        run = store.add_detection_run(slide_id, "m", {})
        ids = store.add_detections(run, BOXES, [0.9, 0.8, 0.7], ["mitotic figure"] * 3)
        store.decide(int(ids[1]), "reject")
    with ReviewStore(path) as store:
        assert store.objects(slide_id).status.tolist() == ["pending", "rejected", "pending"]
        assert store.decisions()[0].reviewer == "alice"


def test_full_durability_option(tmp_path):
    with ReviewStore(tmp_path / "f.db", durability="full") as store:
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with pytest.raises(ReviewStoreError):
        ReviewStore(tmp_path / "g.db", durability="sometimes")


def test_undo_and_redo_act_on_the_reviewers_own_decisions(store, slide_with_detections):
    slide_id, _, ids = slide_with_detections
    a, b, c = (int(i) for i in ids)
    store.decide(a, "accept", reviewer="alice")
    store.decide(b, "reject", reviewer="bob")
    assert store.undo(slide_id, reviewer="alice") == a  # Alice's Ctrl+Z: her accept, not Bob's reject
    assert state(store, slide_id)[("detection", a)][0] == "pending"
    assert state(store, slide_id)[("detection", b)][0] == "rejected"
    assert store.undo(slide_id, reviewer="alice") is None  # nothing of hers is left
    store.decide(c, "accept", reviewer="bob")  # Bob's decision does not clear Alice's redo
    assert store.redo(slide_id, reviewer="alice") == a
    assert state(store, slide_id)[("detection", a)][0] == "accepted"
    assert store.redo(slide_id, reviewer="bob") is None
    assert store.undo(slide_id, reviewer="bob") == c
    assert store.undo(slide_id, reviewer="bob") == b
    assert state(store, slide_id)[("detection", b)][0] == "pending"
    assert store.undo(slide_id) == a  # the store's own reviewer is alice
    before = state(store, slide_id)
    store.rebuild_state()
    assert state(store, slide_id) == before


def test_undo_of_an_overridden_decision_keeps_the_later_one(store, slide_with_detections):
    slide_id, _, ids = slide_with_detections
    a = int(ids[0])
    store.decide(a, "accept", reviewer="alice")
    store.decide(a, "reject", reviewer="bob")
    assert store.undo(slide_id, reviewer="alice") is None  # her accept no longer sets the state: nothing to undo
    assert state(store, slide_id)[("detection", a)][0] == "rejected"  # Bob's reject stands
    assert store.redo(slide_id, reviewer="alice") is None
    assert state(store, slide_id)[("detection", a)][0] == "rejected"
    assert store.undo(slide_id, reviewer="bob") == a
    assert state(store, slide_id)[("detection", a)][0] == "accepted"  # Alice's accept sets the state again
    assert store.undo(slide_id, reviewer="alice") == a
    assert state(store, slide_id)[("detection", a)][0] == "pending"
    assert store.redo(slide_id, reviewer="alice") == a
    assert store.redo(slide_id, reviewer="bob") == a  # back in its place: after Alice's accept
    assert state(store, slide_id)[("detection", a)][0] == "rejected"
    undone = store.undo_decision(slide_id, reviewer="bob")
    assert (undone.verdict, undone.object_kind, undone.object_id, undone.reviewer) == (Verdict.UNDO, "detection", a, "bob")
    assert state(store, slide_id)[("detection", a)][0] == "accepted"
    before = state(store, slide_id)
    store.rebuild_state()
    assert state(store, slide_id) == before


def test_logs_written_by_the_old_per_slide_undo_replay_the_same(store, slide_with_detections):
    """Before undo was per reviewer, Bob's undo could take back Alice's decision; such logs keep their state."""
    slide_id, _, ids = slide_with_detections
    a, b = int(ids[0]), int(ids[1])
    first = store.decide(a, "accept", reviewer="alice")
    second = store.decide(b, "reject", reviewer="alice")
    with store.transaction() as db:  # rows as the old rule wrote them: bob undid alice's latest
        for verdict, target in (("undo", second), ("undo", first), ("redo", first)):
            db.execute(
                "INSERT INTO decisions(slide_id, object_kind, object_id, verdict, label, target_id, reviewer, decided_at)"
                " VALUES (?, 'detection', ?, ?, 'mitotic figure', ?, 'bob', 'then')",
                (slide_id, a if target == first else b, verdict, target),
            )
    store.rebuild_state()
    assert state(store, slide_id)[("detection", a)][0] == "accepted"
    assert state(store, slide_id)[("detection", b)][0] == "pending"
    assert store.redo(slide_id, reviewer="bob") == b  # his redo stack still holds the one he undid
