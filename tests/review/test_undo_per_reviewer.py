"""Undo then redo by one reviewer changes nothing, whoever decided in between (per-reviewer undo/redo)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from midog_viewer.review import ReviewStore
from midog_viewer.review.log import replay

BOXES = np.array([[0, 0, 50, 50], [100, 100, 150, 150], [500, 500, 550, 550]], dtype=float)


@pytest.fixture
def slide(tmp_path):
    with ReviewStore(tmp_path / "review.db", reviewer="alice") as store:
        slide_id = store.add_slide("a.tiff", 0.25, 1000, 1000)
        run_id = store.add_detection_run(slide_id, "m", {})
        ids = [int(i) for i in store.add_detections(run_id, BOXES, [0.9, 0.8, 0.7], ["mitotic figure"] * 3)]
        yield store, slide_id, ids


def statuses(store, slide_id):
    table = store.objects(slide_id, include_deleted=True)
    return dict(zip(table.id.tolist(), table.status.tolist()))


def test_alices_undo_and_redo_never_overturn_bobs_later_reject(slide):
    store, slide_id, (d, e, _) = slide
    store.decide(e, "accept", reviewer="alice")
    store.decide(d, "accept", reviewer="alice")
    store.decide(d, "reject", reviewer="bob")
    before = statuses(store, slide_id)
    assert store.undo(slide_id, reviewer="alice") == e  # her accept of D was overridden: her undo skips it
    assert store.redo(slide_id, reviewer="alice") == e
    assert statuses(store, slide_id) == before and before[d] == "rejected"
    assert store.undo(slide_id, reviewer="alice") == e
    assert store.undo(slide_id, reviewer="alice") is None  # nothing of hers sets a state now
    assert statuses(store, slide_id)[d] == "rejected"


def test_a_redo_goes_back_in_its_place_so_a_later_decision_keeps_winning(slide):
    store, slide_id, (d, _, _) = slide
    store.decide(d, "accept", reviewer="alice")
    assert store.undo(slide_id, reviewer="alice") == d
    store.decide(d, "reject", reviewer="bob")
    assert store.redo(slide_id, reviewer="alice") == d
    assert statuses(store, slide_id)[d] == "rejected"  # the old code made it "accepted"
    assert store.undo(slide_id, reviewer="bob") == d
    assert statuses(store, slide_id)[d] == "accepted"  # Alice's redone accept is under it
    before = statuses(store, slide_id)
    store.rebuild_state()
    assert statuses(store, slide_id) == before


def test_undo_then_redo_is_a_no_op_in_random_sessions_of_three_reviewers(slide):
    store, slide_id, ids = slide
    rng = random.Random(7)
    checked = 0
    for _ in range(300):
        reviewer = rng.choice(("alice", "bob", "carol"))
        roll = rng.random()
        if roll < 0.45:
            store.decide(rng.choice(ids), rng.choice(("accept", "reject")), reviewer=reviewer)
        elif roll < 0.75:
            before = statuses(store, slide_id)
            if store.undo(slide_id, reviewer=reviewer) is not None:
                assert store.redo(slide_id, reviewer=reviewer) is not None
                assert statuses(store, slide_id) == before
                checked += 1
        elif roll < 0.9:
            store.undo(slide_id, reviewer=reviewer)
        else:
            store.redo(slide_id, reviewer=reviewer)
        log = replay(store._db.execute("SELECT id, object_kind, object_id, verdict, label, target_id, reviewer"
                                       " FROM decisions WHERE slide_id = ? ORDER BY id", (slide_id,)).fetchall())
        assert list(log.done) == sorted(log.done)  # in effect, in log order
    assert checked > 20
    before = statuses(store, slide_id)
    store.rebuild_state()
    assert statuses(store, slide_id) == before  # the cache is what the log replays to


def test_overruled_counts_only_decisions_another_reviewer_overrode():
    log = replay([
        (1, "detection", 1, "accept", None, None, "alice"), (2, "detection", 1, "reject", None, None, "alice"),
        (3, "detection", 2, "accept", None, None, "alice"), (4, "detection", 2, "reject", None, None, "bob"),
    ])
    assert (log.overruled("alice"), log.overruled("bob")) == (1, 0)  # her reject of 1 replaced her own accept
    assert (log.undo_target("alice"), log.undo_target("bob")) == (2, 4)
