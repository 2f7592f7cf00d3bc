"""The subtype (normal/atypical) in the store: p_atypical kept, the model's call as default, the reviewer's toggle."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from midog_viewer.errors import ReviewStoreError
from midog_viewer.review import ReviewStore
from midog_viewer.review.schema import _SCHEMA_V1, _SLIDE_FINGERPRINTS_V2, SCHEMA_VERSION, split_sql
from midog_viewer.review.session import ReviewSession

BOXES = np.array([[0, 0, 50, 50], [100, 100, 150, 150], [500, 500, 550, 550]], dtype=float)
P = [0.9, 0.1, np.nan]  # atypical, normal, unknown at threshold 0.5


def subtypes(store, slide_id):
    table = store.objects(slide_id, include_deleted=True)
    return dict(zip(table.id.tolist(), table.atypical.tolist()))


@pytest.fixture
def slide(tmp_path):
    with ReviewStore(tmp_path / "review.db", reviewer="alice") as store:
        slide_id = store.add_slide("a.tiff", 0.25, 1000, 1000)
        run_id = store.add_detection_run(slide_id, "m", {}, atypical_threshold=0.5)
        ids = [int(i) for i in store.add_detections(run_id, BOXES, [0.9, 0.8, 0.7], ["mitotic figure"] * 3, P)]
        yield store, slide_id, ids


def test_p_atypical_is_stored_and_the_models_call_is_the_default(slide):
    store, slide_id, (a, n, u) = slide
    table = store.objects(slide_id)
    assert np.allclose(table.p_atypical[:2], [0.9, 0.1]) and np.isnan(table.p_atypical[2])
    assert subtypes(store, slide_id) == {a: 1, n: 0, u: -1}
    assert store.detection_runs(slide_id)[0]["atypical_threshold"] == 0.5


def test_a_run_without_a_threshold_makes_no_call(slide):
    store, slide_id, _ = slide
    run = store.add_detection_run(slide_id, "m", {})
    (d,) = store.add_detections(run, [[700, 700, 750, 750]], [0.9], ["mitotic figure"], [0.99])
    assert subtypes(store, slide_id)[int(d)] == -1


def test_bad_p_atypical_is_refused(slide):
    store, slide_id, _ = slide
    run = store.add_detection_run(slide_id, "m", {})
    with pytest.raises(ReviewStoreError, match="probability"):
        store.add_detections(run, [[0, 0, 5, 5]], [0.9], ["mitotic figure"], [1.5])
    with pytest.raises(ReviewStoreError, match="one p_atypical per box"):
        store.add_detections(run, [[0, 0, 5, 5]], [0.9], ["mitotic figure"], [0.5, 0.5])


def test_subtype_decision_is_logged_undone_and_redone_without_touching_status(slide):
    store, slide_id, (a, n, u) = slide
    store.decide(a, "accept")
    store.decide_subtype("detection", a, False)
    assert subtypes(store, slide_id)[a] == 0
    assert store.objects(slide_id).status[0] == "accepted"
    assert [d.verdict.value for d in store.decisions(slide_id)] == ["accept", "subtype"]
    assert store.undo(slide_id) == a and subtypes(store, slide_id)[a] == 1  # back to the model's call
    assert store.objects(slide_id).status[0] == "accepted"
    assert store.redo(slide_id) == a and subtypes(store, slide_id)[a] == 0
    store.rebuild_state()
    assert subtypes(store, slide_id)[a] == 0 and store.objects(slide_id).status[0] == "accepted"


def test_two_reviewers_each_undo_their_own_subtype_and_status_decisions(slide):
    store, slide_id, (a, n, u) = slide
    store.decide_subtype("detection", a, False, reviewer="alice")
    store.decide(a, "accept", reviewer="bob")  # another state: it does not overrule alice's subtype
    assert store.undo(slide_id, reviewer="alice") == a
    assert subtypes(store, slide_id)[a] == 1 and store.objects(slide_id).status[0] == "accepted"
    store.decide_subtype("detection", n, True, reviewer="alice")
    store.decide_subtype("detection", n, False, reviewer="bob")
    assert store.undo(slide_id, reviewer="alice") is None  # her subtype of n was overruled by bob's
    assert store.undo(slide_id, reviewer="bob") == n and subtypes(store, slide_id)[n] == 1  # alice's stands again


def test_session_toggle_undo_redo(tmp_path):
    with ReviewStore(tmp_path / "r.db", reviewer="alice") as store:
        (tmp_path / "s.tiff").write_bytes(b"pixels")
        session = ReviewSession(store, tmp_path / "s.tiff", width=1000, height=1000, mpp=0.25)
        run = session.start_run("m", {}, atypical_threshold=0.5)
        keys = session.add_detections(run, BOXES, np.array([0.9, 0.8, 0.7]), ["mitotic figure"] * 3, np.array(P))
        assert session.table.atypical.tolist() == [1, 0, -1]
        seen = []
        session.events.objects_changed.connect(seen.append)
        assert session.toggle_atypical(int(keys[2])) == [int(keys[2])]
        assert session.table.atypical[2] == 1 and seen[-1].keys == (int(keys[2]),)
        session.toggle_atypical(int(keys[0]))
        assert session.table.atypical[0] == 0
        assert session.undo() == [int(keys[0])] and session.table.atypical[0] == 1
        assert session.redo() == [int(keys[0])] and session.table.atypical[0] == 0
        session.decide(int(keys[1]), "reject")
        with pytest.raises(ReviewStoreError, match="only a mitotic figure"):
            session.toggle_atypical(int(keys[1]))
        bob = ReviewSession(store, tmp_path / "s.tiff", width=1000, height=1000, mpp=0.25, reviewer="bob")
        assert bob.table.atypical.tolist() == [0, 0, 1] and bob.undo() == []


def test_a_version_2_store_is_upgraded_with_its_log_intact_and_append_only(tmp_path):
    db_path = tmp_path / "v2.sqlite"
    raw = sqlite3.connect(db_path)
    for statement in [*split_sql(_SCHEMA_V1), *split_sql(_SLIDE_FINGERPRINTS_V2)]:
        raw.execute(statement)
    raw.execute("INSERT INTO schema_version VALUES (2)")
    raw.execute("INSERT INTO slides(path, name, added_at, added_by) VALUES ('a.tiff', 'a.tiff', 'then', 'bob')")
    raw.execute("INSERT INTO detection_runs(slide_id, model, params, created_at, created_by) VALUES (1, 'm', '{}', 't', 'b')")
    raw.execute("INSERT INTO detections(run_id, slide_id, x1, y1, x2, y2, score, label)"
                " VALUES (1, 1, 0, 0, 5, 5, 0.9, 'mitotic figure')")
    raw.execute("INSERT INTO decisions(slide_id, object_kind, object_id, verdict, label, reviewer, decided_at)"
                " VALUES (1, 'detection', 1, 'accept', 'mitotic figure', 'bob', 't')")
    raw.commit()
    raw.close()
    with ReviewStore(db_path, reviewer="bob") as store:
        assert store._db.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION == 3
        assert [d.verdict.value for d in store.decisions(1)] == ["accept"]
        table = store.objects(1)
        assert table.atypical.tolist() == [-1] and np.isnan(table.p_atypical[0])
        store.decide_subtype("detection", 1, True)
        assert store.objects(1).atypical.tolist() == [1] and store.undo(1) == 1
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            store._db.execute("DELETE FROM decisions")
        assert store.integrity_check() == "ok"


def test_an_annotations_subtype_is_its_files_until_a_reviewer_decides(slide):
    store, slide_id, _ = slide
    (gt,) = store.add_annotations(slide_id, [[800, 800, 850, 850]], ["mitotic figure"], "truth.csv", atypical=[1])
    hand = store.add_annotation(slide_id, [900, 900, 950, 950], "mitotic figure")
    table = store.objects(slide_id)
    subtype = dict(zip(zip(table.kind, table.id), table.atypical.tolist()))
    assert subtype[("annotation", int(gt))] == 1 and subtype[("annotation", hand)] == -1
    store.decide_subtype("annotation", int(gt), False)
    store.decide_subtype("annotation", hand, True)
    table = store.objects(slide_id)
    subtype = dict(zip(zip(table.kind, table.id), table.atypical.tolist()))
    assert subtype[("annotation", int(gt))] == 0 and subtype[("annotation", hand)] == 1
    assert store.undo(slide_id) == hand and store.undo(slide_id) == int(gt)
    table = store.objects(slide_id)
    assert dict(zip(zip(table.kind, table.id), table.atypical.tolist()))[("annotation", int(gt))] == 1
    with pytest.raises(ReviewStoreError, match="no annotation with id 999"):
        store.decide_subtype("annotation", 999, True)
    with pytest.raises(ReviewStoreError, match="one subtype per box"):
        store.add_annotations(slide_id, [[0, 0, 5, 5]], ["mitotic figure"], "x.csv", atypical=[1, 0])
