"""The review session announces every change after the store has it, and replaces HPFs all or nothing."""

from __future__ import annotations

import numpy as np
import pytest

from midog_viewer.errors import ReviewStoreError
from midog_viewer.review.events import ObjectsChanged
from midog_viewer.review.session import ReviewSession
from midog_viewer.review.store import ReviewStore


@pytest.fixture()
def session(tmp_path):
    image = tmp_path / "hpf.tiff"
    image.write_bytes(b"pixels")
    with ReviewStore(tmp_path / "reviews.sqlite", reviewer="tester") as store:
        yield ReviewSession(store, image, width=1000, height=800, mpp=0.25)


def _record(session):
    seen: dict[str, list] = {"objects": [], "hpfs": []}
    session.events.objects_changed.connect(seen["objects"].append)
    session.events.hpfs_changed.connect(seen["hpfs"].append)
    return seen


def test_events_fire_on_detections_decisions_undo_redo_and_added_mitoses(session):
    seen = _record(session)
    run = session.start_run("stand-in", {})
    keys = session.add_detections(run, np.array([[10, 10, 60, 60], [300, 300, 350, 350]], float),
                                  np.array([0.9, 0.8]), ["mitotic figure", "mitotic figure"])
    assert [c.added.tolist() for c in seen["objects"]] == [keys.tolist()]
    seen["objects"].clear()

    def status_when_told(change: ObjectsChanged):  # subscribers see the state the store already has
        return [session.store.objects(session.slide_id).status[0] for _ in change.keys]

    told = []
    session.events.objects_changed.connect(lambda change: told.append(status_when_told(change)))
    session.decide(keys[0], "accept")
    session.undo()
    session.redo()
    assert [c.keys for c in seen["objects"]] == [(int(keys[0]),)] * 3
    assert told == [["accepted"], ["pending"], ["accepted"]]
    added = session.add_mitosis(500, 500)
    assert seen["objects"][-1].added.tolist() == [added]
    session.reload()
    assert seen["objects"][-1].reloaded
    assert seen["hpfs"] == []  # no field changed


def test_nothing_to_undo_and_a_judgement_of_ground_truth_announce_nothing(session):
    session.store.add_annotations(session.slide_id, np.array([[10, 10, 60, 60]], float), ["mitotic figure"], "truth")
    session.reload()
    seen = _record(session)
    assert session.undo() == []
    assert session.decide(int(session.keys[0]), "reject") == []  # imported ground truth is not judged
    assert seen["objects"] == []


def test_marking_and_replacing_hpfs_announce_the_fields_now_stored(session):
    seen = _record(session)
    session.mark_hpf((0, 0, 100, 100))
    session.mark_hpf((0, 0, 100, 100))  # the same field again: stored once
    assert [len(fields) for fields in seen["hpfs"]] == [1, 1]
    kept = session.hpf_regions()[0].id
    fields = session.replace_hpfs([(0.2, 0.0, 100, 100), (200, 200, 50, 50), (5, 5, 0.5, 40)])
    assert [(f.x, f.y, f.w, f.h) for f in fields] == [(0, 0, 100, 100), (200, 200, 50, 50)]
    assert fields[0].id == kept  # within half a pixel: the same field, its id kept
    assert seen["hpfs"][-1] == fields


def test_replace_hpfs_is_all_or_nothing(session, monkeypatch):
    session.mark_hpf((0, 0, 100, 100))
    session.mark_hpf((100, 0, 100, 100))
    before = session.hpf_regions()
    seen = _record(session)
    real_add = session.store.add_hpf
    calls = []

    def failing_add(slide_id, region):
        calls.append(region)
        if len(calls) == 2:
            raise ReviewStoreError("disk full (injected)")
        return real_add(slide_id, region)

    monkeypatch.setattr(session.store, "add_hpf", failing_add)
    with pytest.raises(ReviewStoreError, match="injected"):
        # deletes the second field, adds a first new one, then fails on the second new one
        session.replace_hpfs([(0, 0, 100, 100), (300, 300, 50, 50), (400, 400, 50, 50)])
    assert len(calls) == 2
    assert session.hpf_regions() == before  # the deletion and the first addition were rolled back
    assert seen["hpfs"] == []  # and nothing was announced
    with ReviewStore(session.store.path, read_only=True) as other:  # nor did another connection see any of it
        assert other.hpf_regions(session.slide_id) == before
