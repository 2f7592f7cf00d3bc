"""Cohorts on a real dask cluster: the store and report, resume after a stop, a killed worker, a broken slide."""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from batch_slides import write_field

from midog_viewer.batch.plan import find_slides
from midog_viewer.batch.run import CohortRun, run_key
from midog_viewer.detect import Detector
from midog_viewer.detect.tissue import detect_tissue, tissue_filter
from midog_viewer.io import open_slide
from midog_viewer.review.store import ReviewStore

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
KEY = run_key(None, None)  # what `midog-viewer batch` uses without --model and --score-thr


def _run(client, db, paths, **kwargs):
    with ReviewStore(db) as store:
        return CohortRun(client, store, find_slides(paths), KEY, "demo-tiny", **kwargs).run()


def _stored(db):
    """Every stored detection per slide name, as sorted rounded boxes."""
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT s.name, d.x1, d.y1, d.x2, d.y2 FROM detections d JOIN slides s ON s.id = d.slide_id")
        found: dict[str, list] = {}
        for name, *box in rows:
            found.setdefault(name, []).append(tuple(round(v, 2) for v in box))
    return {name: sorted(boxes) for name, boxes in found.items()}


def _ledger(db):
    with sqlite3.connect(db) as con:
        tiles = con.execute("SELECT COUNT(*), COUNT(DISTINCT run_id || '/' || tile) FROM batch_tiles").fetchone()
        return tiles, con.execute("SELECT SUM(tiles) FROM batch_runs").fetchone()[0]


def test_a_cohort_lands_in_the_store_with_a_report_and_a_second_run_detects_nothing(cluster, cohort,
                                                                                      shared_data, tmp_path):
    client, _ = cluster
    db = tmp_path / "cohort.db"
    real_tile = shared_data / "tiles" / "stardist_histo.jpg"
    result = _run(client, db, [cohort, real_tile], tiles_per_task=4)
    rows = {row.slide: row for row in result.rows}
    assert list(rows) == ["a.tiff", "b.tiff", "broken.svs", "glass.tiff", "stardist_histo.jpg"]
    assert rows["broken.svs"].status == "failed" and "broken.svs" in rows["broken.svs"].error
    done = [row for row in result.rows if row.status == "done"]
    assert len(done) == 4 and all(row.mitoses != "" and row.seconds != "" for row in done)
    assert rows["glass.tiff"].tissue_fraction < 1 and rows["glass.tiff"].tiles < 6  # of 3 x 2 planned
    assert rows["a.tiff"].tiles == 4 and rows["a.tiff"].per_10_hpf != "" and rows["a.tiff"].mitotic_score in (1, 2, 3)
    assert rows["stardist_histo.jpg"].per_10_hpf == ""  # a JPEG has no pixel size: counted, no densities
    assert result.tiles_detected == sum(row.tiles for row in done)
    with ReviewStore(db) as store:  # ready to review: detection runs with their tissue fraction
        glass = store.find_slide("glass.tiff")
        (run,) = store.detection_runs(glass.id)
        assert run["params"]["tissue_fraction"] == rows["glass.tiff"].tissue_fraction
        assert run["params"]["source"] == "batch" and glass.width == 1100 and glass.mpp == pytest.approx(0.25)
        from midog_viewer.atypical import shared_classifier

        assert run["atypical_threshold"] == shared_classifier().config.threshold
    # the same detections as one process finds on the same tissue tiles
    detector = Detector(device="cpu")
    with open_slide(cohort / "glass.tiff") as slide:
        alone = detector.detect(slide, tile_filter=tissue_filter(detect_tissue(slide)))
    assert _stored(db).get("glass.tiff", []) == sorted(tuple(round(float(v), 2) for v in b) for b in alone.boxes)
    before = _stored(db)
    again = _run(client, db, [cohort, real_tile])
    assert again.tiles_detected == 0
    assert [row.status for row in again.rows] == ["skipped", "skipped", "failed", "skipped", "skipped"]
    assert [row.mitoses for row in again.rows] == [row.mitoses for row in result.rows]
    assert _stored(db) == before


def test_a_stopped_client_resumes_without_detecting_a_finished_tile_again(cluster, tmp_path):
    client, _ = cluster
    folder = tmp_path / "slides"
    folder.mkdir()
    write_field(folder / "s4.tiff", 4)
    commits = []

    def stop_after_two(path, tiles):
        commits.append(tiles)
        if len(commits) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the client between two commits

    db = tmp_path / "resume.db"
    with pytest.raises(KeyboardInterrupt):
        _run(client, db, [folder], tiles_per_task=1, on_commit=stop_after_two)
    (rows, distinct), total = _ledger(db)
    assert rows == distinct == 2 and total == 4
    resumed = _run(client, db, [folder], tiles_per_task=1)  # the rest of the same slide
    assert resumed.tiles_detected == total - 2
    assert [row.status for row in resumed.rows] == ["done"]
    assert _ledger(db) == ((4, 4), 4)
    clean = tmp_path / "clean.db"
    _run(client, clean, [folder], tiles_per_task=1)
    assert _stored(db) == _stored(clean)  # nothing lost, nothing stored twice


def test_sigint_to_the_batch_command_then_a_resume(cluster, tmp_path):
    client, local = cluster
    folder = tmp_path / "slides"
    folder.mkdir()
    for seed in range(10, 16):  # six one-tile slides: six work units for two workers
        write_field(folder / f"s{seed}.tiff", seed, 512, 512)
    db, report = tmp_path / "cohort.db", tmp_path / "report.csv"
    command = [sys.executable, "-m", "midog_viewer", "batch", str(folder), "--db", str(db), "--scheduler",
               local.scheduler_address, "--report", str(report), "--quiet"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    finished = 0
    while time.monotonic() < deadline and process.poll() is None:
        try:
            (finished, _), _ = _ledger(db)
        except sqlite3.OperationalError:  # the tables are not there yet
            finished = 0
        if finished:
            break
        time.sleep(0.1)
    assert finished, process.communicate()
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert err.strip().splitlines() == ["midog-viewer: interrupted"]
    assert not report.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    (done, _), _ = _ledger(db)
    assert 0 < done < 6  # stopped part-way (slides not planned yet have no ledger rows)
    resumed = _run(client, db, [folder])
    assert resumed.tiles_detected == 6 - done
    assert _ledger(db) == ((6, 6), 6)
    # a broken slide beside them: it fails alone, named on stderr and in the report, exit 1
    broken = tmp_path / "broken.svs"
    broken.write_bytes(b"II*\x00" + b"\x00" * 40)
    again = subprocess.run(command[:5] + [str(broken)] + command[5:], cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 1, again.stderr
    assert again.stderr.strip().splitlines() == [f"midog-viewer: failed: broken.svs: {_broken_message(broken)}"]
    with report.open() as handle:
        statuses = [(row["slide"], row["status"]) for row in csv.DictReader(handle)]
    assert statuses == [(f"s{seed}.tiff", "skipped") for seed in range(10, 16)] + [("broken.svs", "failed")]
    # every slide finished: no cluster is even contacted (this address has no scheduler)
    finished = subprocess.run(command[:8] + ["tcp://127.0.0.1:1"] + command[9:], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert "6 slides: 0 done, 6 skipped, 0 failed (0 tiles detected)" in finished.stdout


def _broken_message(path):
    from midog_viewer.errors import SlideError

    try:
        open_slide(path)
    except SlideError as exc:
        return str(exc)
    raise AssertionError("the broken slide opened")


def test_a_worker_killed_mid_run_and_the_run_still_finishes(cluster, tmp_path):
    client, _ = cluster
    folder = tmp_path / "slides"
    folder.mkdir()
    write_field(folder / "s6.tiff", 6)
    pids = list(client.run(os.getpid).values())
    assert len(set(pids)) == 2 and os.getpid() not in pids
    killed = []

    def kill_a_worker(path, tiles):
        if not killed:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    result = _run(client, tmp_path / "killed.db", [folder], tiles_per_task=1, on_commit=kill_a_worker)
    assert killed
    assert [row.status for row in result.rows] == ["done"]
    assert result.tiles_detected == 4 and _ledger(tmp_path / "killed.db") == ((4, 4), 4)


def test_an_unreachable_scheduler_is_one_line_and_exit_2(cohort, tmp_path):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    db = tmp_path / "cohort.db"
    done = subprocess.run(
        [sys.executable, "-m", "midog_viewer", "batch", str(cohort), "--db", str(db), "--scheduler",
         f"tcp://127.0.0.1:{port}", "--report", str(tmp_path / "r.csv")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "1s"},  # give up sooner than 5 s
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("midog-viewer: error: cannot reach the dask scheduler"), done.stderr
    assert not (tmp_path / "r.csv").exists() and not db.exists()  # nothing left behind
