"""The Qt-free review session: decisions reach the store at once, undo/redo, added mitoses, counts, F1."""

from __future__ import annotations

import numpy as np
import pytest

from midog_viewer.errors import ReviewStoreError
from midog_viewer.review.session import ReviewSession, default_db_path
from midog_viewer.review.store import ReviewStore

TRUTH = {"boxes": np.array([[100, 100, 150, 150], [400, 400, 450, 450]], float),
         "labels": ["mitotic figure", "mitotic figure"]}


@pytest.fixture()
def store(tmp_path):
    with ReviewStore(tmp_path / "reviews.sqlite", reviewer="tester") as s:
        yield s


def _session(store, tmp_path, truth=None):
    image = tmp_path / "hpf.tiff"
    if not image.exists():
        image.write_bytes(b"pixels")
    return ReviewSession(store, image, width=1000, height=800, mpp=0.25, ground_truth=truth)


def _detect(session):
    run = session.start_run("stand-in", {"score_thr": 0.1})
    boxes = np.array([[102, 101, 152, 151], [700, 700, 750, 750], [300, 300, 350, 350]], float)
    return session.add_detections(run, boxes, np.array([0.9, 0.6, 0.2]),
                                  ["mitotic figure", "mitotic figure", "hard negative"])


def test_decisions_are_in_the_store_and_survive_reopening(store, tmp_path):
    session = _session(store, tmp_path)
    keys = _detect(session)
    assert session.decide(keys[0], "accept") == [keys[0]]
    session.decide(keys[1], "reject")
    session.decide(keys[2], "hard negative")
    again = _session(store, tmp_path)
    statuses = dict(zip(again.keys.tolist(), again.table.status.tolist()))
    assert [statuses[k] for k in keys.tolist()] == ["accepted", "rejected", "relabelled"]


def test_undo_and_redo_restore_and_reapply_the_last_decision(store, tmp_path):
    session = _session(store, tmp_path)
    keys = _detect(session)
    session.decide(keys[1], "reject")
    assert session.undo() == [keys[1]]
    assert session.table.status[session.row_of(keys[1])] == "pending"
    assert session.redo() == [keys[1]]
    assert session.table.status[session.row_of(keys[1])] == "rejected"
    session.undo()
    assert session.undo() == []  # nothing left to undo


def test_an_added_mitosis_is_accepted_and_its_undo_hides_it(store, tmp_path):
    session = _session(store, tmp_path)
    key = session.add_mitosis(500, 10)
    row = session.row_of(key)
    assert key < 0 and session.table.status[row] == "accepted"
    np.testing.assert_allclose(session.table.boxes[row], [475, 0, 525, 35])
    session.undo()
    assert not session.visible_mask(0.0)[session.row_of(key)]


def test_threshold_hides_only_pending_low_scores(store, tmp_path):
    session = _session(store, tmp_path)
    keys = _detect(session)
    session.decide(keys[2], "reject")
    shown = session.visible_mask(0.5)
    assert shown[session.row_of(keys[0])] and shown[session.row_of(keys[2])]
    session.undo()
    assert not session.visible_mask(0.5)[session.row_of(keys[2])]


def test_counts_follow_decisions_and_evaluation_matches_ground_truth(store, tmp_path):
    session = _session(store, tmp_path, TRUTH)
    assert session.has_ground_truth()
    keys = _detect(session)
    session.decide(keys[0], "accept")
    totals = session.counts().totals
    # the accepted detection lies on a ground-truth mitosis (it is matched below): one mitosis, not two
    assert (totals["accepted"], totals["ground_truth"], totals["pending"], totals["mitoses"]) == (0, 2, 1, 2)
    assert session.pending_count(0.5) == 1 and session.pending_count(0.5, (0, 0, 300, 300)) == 0
    figures, statuses = session.evaluation(score_threshold=0.5)
    assert (figures["tp"], figures["fp"], figures["fn"]) == (1, 1, 1)
    assert (statuses[keys[0]], statuses[keys[1]]) == ("matched", "unmatched")
    in_corner, _ = session.evaluation(score_threshold=0.5, region=(0, 0, 300, 300))
    assert (in_corner["tp"], in_corner["fp"], in_corner["fn"]) == (1, 0, 0)
    # ground truth that came with the image is stored once, however often the slide is opened
    assert _session(store, tmp_path, TRUTH).counts().totals["ground_truth"] == 2


def test_unknown_actions_and_objects_are_refused(store, tmp_path):
    session = _session(store, tmp_path)
    keys = _detect(session)
    with pytest.raises(ReviewStoreError, match="unknown review action"):
        session.decide(keys[0], "maybe")
    with pytest.raises(ReviewStoreError, match="not on this slide"):
        session.decide(12345, "accept")


def test_default_db_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MIDOG_VIEWER_DB", str(tmp_path / "mine.sqlite"))
    assert default_db_path() == tmp_path / "mine.sqlite"
    monkeypatch.delenv("MIDOG_VIEWER_DB")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_db_path() == tmp_path / "midog-viewer" / "reviews.sqlite"


def test_a_mitosis_found_again_by_a_later_batch_is_stored_once(store, tmp_path):
    session = _session(store, tmp_path)
    first = _detect(session)
    run = session.start_run("stand-in", {"score_thr": 0.1})
    again = session.add_detections(run, np.array([[104, 100, 154, 150], [900, 10, 950, 60], [310, 320, 360, 370]]),
                                   np.array([0.95, 0.7, 0.6]), ["mitotic figure"] * 3)
    assert len(again) == 2  # the box on the first one (IoU 0.92) is dropped; IoU 0.2 with [300, 300, ...] is kept
    assert len(session.table) == len(first) + 2 == len(store.objects(session.slide_id))


def test_undo_takes_back_only_the_current_reviewers_decisions(store, tmp_path):
    alice = _session(store, tmp_path)
    keys = _detect(alice)
    bob = ReviewSession(store, tmp_path / "hpf.tiff", width=1000, height=800, mpp=0.25, reviewer="bob")
    assert alice.reviewer == "tester" and bob.reviewer == "bob"
    alice.decide(keys[0], "accept")
    bob.decide(keys[1], "reject")
    assert alice.undo() == [keys[0]]  # Alice's Ctrl+Z: her accept, never Bob's reject
    assert alice.table.status[alice.row_of(keys[0])] == "pending"
    assert alice.undo() == []
    bob.reload()
    assert bob.table.status[bob.row_of(keys[1])] == "rejected"
    added = bob.add_mitosis(600, 600)
    assert bob.undo() == [added] and bob.undo() == [keys[1]]
    assert alice.redo() == [keys[0]]
    assert [d.reviewer for d in store.decisions(alice.slide_id)] == ["tester", "bob", "tester", "bob", "bob", "bob", "tester"]


def _file_alone_holds(db_path, tmp_path, name) -> int:
    """Decisions in a plain copy of the database file alone (what copying reviews.sqlite gives)."""
    import shutil
    import sqlite3

    copy = tmp_path / name
    shutil.copyfile(db_path, copy)
    db = sqlite3.connect(copy)
    try:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'decisions'").fetchall():
            return 0  # even the schema is still only in the -wal
        return db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
    finally:
        db.close()


def test_closing_a_session_or_idling_puts_every_decision_in_the_database_file(store, tmp_path):
    other = ReviewStore(store.path, reviewer="other")  # another open connection keeps the -wal alive
    try:
        session = _session(store, tmp_path)
        keys = _detect(session)
        session.decide(keys[0], "accept")
        assert _file_alone_holds(store.path, tmp_path, "before.sqlite") == 0  # still in the -wal
        assert not session.checkpoint_if_idle(idle_s=3600)  # not idle long enough
        assert session.checkpoint_if_idle(idle_s=0)
        assert _file_alone_holds(store.path, tmp_path, "idle.sqlite") == 1
        assert not session.checkpoint_if_idle(idle_s=0)  # nothing new to fold in
        session.decide(keys[1], "reject")
        assert session.close()
        assert _file_alone_holds(store.path, tmp_path, "closed.sqlite") == 2
    finally:
        other.close()


def test_an_undo_with_nothing_of_the_reviewers_in_effect_says_so(store, tmp_path):
    alice = _session(store, tmp_path)
    keys = _detect(alice)
    bob = ReviewSession(store, tmp_path / "hpf.tiff", width=1000, height=800, mpp=0.25, reviewer="bob")
    alice.decide(keys[0], "accept")
    bob.decide(keys[0], "reject")
    assert alice.undo() == [] and alice.redo() == []  # her accept was overridden: undo + redo change nothing
    alice.reload()
    assert alice.table.status[alice.row_of(keys[0])] == "rejected"
    said = alice.nothing_to("undo")
    assert "Nothing of yours (tester) to undo" in said and "1 remaining decision(s)" in said and "\n" not in said
    assert bob.undo() == [keys[0]] and bob.nothing_to("undo") == "Nothing of yours (bob) to undo on this slide."
    assert alice.nothing_to("redo") == "Nothing of yours (tester) to redo on this slide."
