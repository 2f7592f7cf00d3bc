"""Decisions survive a killed writer; another process reads while one writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from midog_viewer.review import ReviewStore

# A writer that prints each decision id right after decide() returned, then goes on until killed.
WRITER = """
import sys
from midog_viewer.review import ReviewStore
store = ReviewStore(sys.argv[1], reviewer="writer")
ids = [int(i) for i in sys.argv[2].split(",")]
n = 0
while True:
    decision = store.decide(ids[n % len(ids)], "accept" if n % 3 else "reject")
    print(decision, flush=True)
    n += 1
    if n % 50 == 0:
        store.undo(1)
"""

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")


def _prepare(path) -> list[int]:
    with ReviewStore(path, reviewer="setup") as store:
        slide_id = store.add_slide("crash.tiff", 0.25, 10_000, 10_000)
        run = store.add_detection_run(slide_id, "m", {})
        boxes = np.array([[i * 60, 0, i * 60 + 50, 50] for i in range(20)], dtype=float)
        return store.add_detections(run, boxes, np.linspace(0.5, 0.9, 20), ["mitotic figure"] * 20).tolist()


def _start_writer(path, ids) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), ",".join(map(str, ids))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def test_sigkill_loses_no_returned_decision(tmp_path):
    path = tmp_path / "crash.db"
    ids = _prepare(path)
    writer = _start_writer(path, ids)
    returned = []
    deadline = time.monotonic() + 60
    while len(returned) < 300 and time.monotonic() < deadline:
        line = writer.stdout.readline()
        if not line:
            break
        returned.append(int(line))
    os.kill(writer.pid, signal.SIGKILL)
    rest, errors = writer.communicate(timeout=30)
    returned += [int(line) for line in rest.split()]
    assert writer.returncode == -signal.SIGKILL, errors
    assert len(returned) >= 300, errors
    with ReviewStore(path) as store:
        assert store.integrity_check() == "ok"
        logged = {d.id for d in store.decisions()}
        assert set(returned) <= logged
        before = store.objects(1)
        store.rebuild_state()  # the cached state agrees with the log even after the crash
        after = store.objects(1)
        assert before.status.tolist() == after.status.tolist()


def test_reader_in_another_process_sees_commits_while_writer_runs(tmp_path):
    path = tmp_path / "shared.db"
    ids = _prepare(path)
    writer = _start_writer(path, ids)
    try:
        seen = []
        with ReviewStore(path, reviewer="reader") as reader:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (len(seen) < 5 or seen[-1] < 200):
                seen.append(len(reader.decisions()))
                reader.objects(1, region=(0, 0, 600, 60))  # region queries work mid-write too
                time.sleep(0.02)
        assert seen == sorted(seen) and seen[-1] >= 200
        assert len(set(seen)) > 1  # the reader saw the log grow while the writer was still running
        assert writer.poll() is None
    finally:
        writer.kill()
        writer.communicate(timeout=30)
