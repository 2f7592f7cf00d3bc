"""import / export / counts / evaluate under mistakes: one line and exit 2, nothing lost, nothing left behind."""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import midog_viewer
from midog_viewer.cli import main
from midog_viewer.formats import sliderunner
from midog_viewer.review import ReviewStore

#: Run the CLI of this checkout, whatever the current folder.
ENV = {**os.environ, "PYTHONPATH": str(Path(midog_viewer.__file__).resolve().parents[1])}


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(code, err):
    return code == 2 and err.startswith("midog-viewer: error: ") and err.count("\n") == 1 and "Traceback" not in err


def make_db(path, detections=50, size=1000, mpp=0.25):
    rng = np.random.default_rng(0)
    with ReviewStore(path, reviewer="alice") as store:
        slide_id = store.add_slide("case.tiff", mpp, size, size)
        store.add_annotations(slide_id, np.array([[0, 0, 50, 50]]), ["mitotic figure"], "gt.json")
        run_id = store.add_detection_run(slide_id, "m", {})
        xy = rng.uniform(0, size - 50, (detections, 2))
        store.add_detections(run_id, np.hstack([xy, xy + 50]), rng.uniform(0, 1, detections),
                             ["mitotic figure"] * detections)
    return path


@pytest.fixture
def db(tmp_path):
    (tmp_path / "db").mkdir()
    return make_db(tmp_path / "db" / "r.sqlite")


@pytest.fixture
def evaluation_inputs(tmp_path):
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"c.tiff": {"annotations": [[0.1, 0.1, 0.0]]}}))
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({"c.tiff": {"type": "Multiple points", "points": [
        {"name": "mitotic figure", "point": [0.1, 0.1, 0.0], "probability": 0.9}]}}))
    return gt, pred


@pytest.fixture
def readonly_folder(tmp_path):
    """A folder nobody may write in: chmod for a user; root ignores modes, so /sys (writable by nobody)."""
    if os.geteuid() == 0:
        yield Path("/sys")
        return
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


# -- item 1: an export onto the database ------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["csv", "coco", "sliderunner", "geojson", "midog-json"])
def test_export_onto_the_database_is_refused_and_it_stays_byte_identical(capsys, db, fmt):
    folder = db.parent
    (folder / "link.csv").symlink_to(db)
    os.link(db, folder / "hard.csv")
    before = db.read_bytes()
    for out in (db, f"{folder}/./r.sqlite", folder / "sub" / ".." / "r.sqlite", folder / "link.csv", folder / "hard.csv",
                f"{db}-wal", f"{db}-shm"):
        code, out_text, err = run(capsys, "export", "--db", db, "--format", fmt, "--out", out)
        assert one_line(code, err) and "is the review database r.sqlite" in err and out_text == ""
    assert db.read_bytes() == before
    with ReviewStore(db) as store:
        assert store.integrity_check() == "ok" and len(store.objects(store.slides()[0].id)) == 51


# -- items 9 and 15: outputs to a missing, read-only, full or non-file location ---------------------------

def _outputs(db, gt, pred, target):
    return [[str(a) for a in argv] for argv in (
        ["export", "--db", db, "--format", "csv", "--out", target],
        ["export", "--db", db, "--format", "sliderunner", "--out", target],
        ["counts", "--db", db, "--csv", target],
        ["evaluate", "--gt", gt, "--pred", pred, "--metrics", target],
        ["evaluate", "--gt", gt, "--pred", pred, "--cases-csv", target],
        ["evaluate", "--gt", gt, "--pred", pred, "--pr-png", f"{target}.png"],
    )]


@pytest.mark.parametrize("where", ["missing", "readonly", "device", "folder"])
def test_outputs_to_a_bad_location_are_one_line_and_leave_nothing(capsys, db, evaluation_inputs, tmp_path,
                                                                  readonly_folder, full_device, where):
    gt, pred = evaluation_inputs
    for folder in ("a-folder", "a-folder.png"):
        (tmp_path / folder).mkdir()
    target = {"missing": tmp_path / "no" / "such" / "out.csv", "readonly": readonly_folder / "out.csv",
              "device": full_device, "folder": tmp_path / "a-folder"}[where]
    watched = target.parent if target.parent.exists() else tmp_path
    before = sorted(os.listdir(watched))
    for argv in _outputs(db, gt, pred, target):
        if where == "device" and argv[-1].endswith(".png"):
            continue  # full-device.png is no device
        code, _, err = run(capsys, *argv)
        assert one_line(code, err), (argv, err)
    assert sorted(os.listdir(watched)) == before
    assert stat.S_ISCHR(os.stat(full_device).st_mode)  # a device stays a device


def test_a_sliderunner_export_never_replaces_a_fifo(capsys, db, tmp_path):
    fifo = tmp_path / "pipe.sqlite"
    os.mkfifo(fifo)
    code, _, err = run(capsys, "export", "--db", db, "--format", "sliderunner", "--out", fifo)
    assert one_line(code, err) and "not a regular file" in err
    assert fifo.is_fifo() and sorted(p.name for p in tmp_path.iterdir()) == ["db", "pipe.sqlite"]


def _full_disk_at(limit):
    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG, as on a full disk
    return limit_file_size


@pytest.mark.parametrize("command", ["export", "counts"])
def test_a_full_disk_is_one_line_and_the_previous_output_stays(tmp_path, command):
    db = make_db(tmp_path / "r.sqlite", detections=5000, size=60_000)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "o.csv"
    out.write_bytes(b"the previous export\n")
    argv = (["export", "--db", db, "--format", "csv", "--out", out] if command == "export"
            else ["counts", "--db", db, "--csv", out])
    result = subprocess.run([sys.executable, "-m", "midog_viewer", *map(str, argv)], capture_output=True, text=True,
                            env=ENV, timeout=300, preexec_fn=_full_disk_at(64 * 1024))
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("midog-viewer: error: cannot write") and "File too large" in result.stderr
    assert out.read_bytes() == b"the previous export\n" and os.listdir(out_dir) == ["o.csv"]


# -- item 14 and 13: numeric options, and negative values taken as values ---------------------------------

@pytest.mark.parametrize("argv", [
    ["counts", "--db", "{db}", "--mpp", "-0.25"], ["counts", "--db", "{db}", "--mpp", "inf"],
    ["counts", "--db", "{db}", "--mpp=nan"], ["counts", "--db", "{db}", "--mpp", "-inf"],
    ["counts", "--db", "{db}", "--mpp", "0"], ["counts", "--db", "{db}", "--hpf-mm2", "-0.237"],
    ["counts", "--db", "{db}", "--hpf-mm2", "nan"], ["counts", "--db", "{db}", "--hpf-mm2", "0"],
    ["evaluate", "--gt", "{gt}", "--pred", "{pred}", "--radius-um", "-5"],
    ["evaluate", "--gt", "{gt}", "--pred", "{pred}", "--radius-um", "0"],
    ["evaluate", "--gt", "{gt}", "--pred", "{pred}", "--radius-um", "nan"],
    ["evaluate", "--gt", "{gt}", "--pred", "{pred}", "--radius-um=inf"],
    ["import", "{gt}", "--db", "{tmp}/new.db", "--point-box-px", "-50"],
    ["import", "{gt}", "--db", "{tmp}/new.db", "--point-box-px", "nan"],
    ["import", "{gt}", "--db", "{tmp}/new.db", "--point-box-um", "0"],
    ["import", "{gt}", "--db", "{tmp}/new.db", "--point-box-um", "-1e3"],
    ["detect", "{gt}", "--mpp", "0", "--out", "{tmp}/o.json"],
    ["detect", "{gt}", "--mpp=nan", "--out", "{tmp}/o.json"],
])
def test_numeric_options_are_refused_in_one_line(capsys, db, evaluation_inputs, tmp_path, argv):
    gt, pred = evaluation_inputs
    argv = [a.format(db=db, gt=gt, pred=pred, tmp=tmp_path) for a in argv]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    option = next(a for a in argv if a.startswith("--") and a.split("=")[0] not in ("--db", "--gt", "--pred"))
    assert exit_.value.code == 2 and err.count("\n") == 1 and err.startswith("midog-viewer: error: ")
    assert f"argument {option.split('=')[0]}: must be a positive finite number" in err
    assert not (tmp_path / "new.db").exists()


def test_negative_values_and_lists_are_values_not_options(capsys, tmp_path):
    code, _, err = run(capsys, "detect", tmp_path / "missing.svs", "--region", "-100,0,512,512",
                       "--out", tmp_path / "o.json")
    assert one_line(code, err) and "expected one argument" not in err and "missing.svs" in err


# -- item 15: a failed import leaves no new database ------------------------------------------------------

def test_an_unexpected_import_error_leaves_no_new_database(tmp_path, monkeypatch, evaluation_inputs):
    def explode(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("midog_viewer.review.importing.import_file", explode)
    with pytest.raises(RuntimeError):
        main(["import", str(evaluation_inputs[0]), "--db", str(tmp_path / "new.db")])
    assert not any(p.name.startswith("new.db") for p in tmp_path.iterdir())


# -- item 3: an overwriting export killed at random moments -----------------------------------------------

KILL_FORMATS = {"csv": "o.csv", "coco": "o.json", "midog-json": "p.json", "sliderunner": "o.sqlite", "geojson": "o.geojson"}


def _same_export(fmt, path, reference):
    if fmt != "sliderunner":
        return path.read_bytes() == reference.read_bytes()
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        if db.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            return False
    finally:
        db.close()
    got, want = sliderunner.read(path), sliderunner.read(reference)  # guids and times differ between runs
    return [(i.name, i.boxes.tolist(), i.labels) for i in got] == [(i.name, i.boxes.tolist(), i.labels) for i in want]


def _writing(pid, folder):
    """Whether the process holds a file in ``folder`` open (its output, or a temporary file for it)."""
    try:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return False
    return any(link.startswith(f"{folder}/") for link in links)


def _timed_run(argv, folder):
    """Seconds the output file was open for writing (from, to) and the duration of one uninterrupted run."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    opened = closed = None
    while process.poll() is None:
        writing = _writing(process.pid, folder)
        now = time.perf_counter() - started
        if opened is None and writing:
            opened = now
        elif opened is not None and closed is None and not writing:
            closed = now
        time.sleep(0.001)
    total = time.perf_counter() - started
    assert process.returncode == 0
    opened = 0.9 * total if opened is None else opened
    return opened, closed or total, total


@pytest.mark.slow
def test_an_export_killed_at_random_moments_leaves_the_old_file_or_the_whole_new_one(tmp_path, capsys):
    db = make_db(tmp_path / "r.sqlite", detections=40_000, size=200_000)
    rng = random.Random(20261201)
    outcomes = {"old": 0, "new": 0}
    while_writing = 0
    for fmt, name in KILL_FORMATS.items():
        reference_dir = tmp_path / f"reference-{fmt}"
        reference_dir.mkdir()
        argv = [sys.executable, "-m", "midog_viewer", "export", "--db", str(db), "--format", fmt, "--objects", "all",
                "--out"]
        opened, closed, duration = _timed_run([*argv, str(reference_dir / name)], reference_dir)
        out_dir = tmp_path / f"out-{fmt}"
        out_dir.mkdir()
        target = out_dir / name
        for kill in range(4):
            old = f"the previous {fmt} export, {rng.random()}\n".encode() * 2000
            target.write_bytes(old)
            process = subprocess.Popen([*argv, str(target)], env=ENV, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
            if kill % 2:  # a moment anywhere in the run
                time.sleep(rng.uniform(0.0, 1.05 * duration))
            else:  # a moment while it writes its file: once the temporary file is open, within the write's time
                while process.poll() is None and not _writing(process.pid, out_dir):
                    time.sleep(0.001)
                time.sleep(rng.uniform(0.0, closed - opened))
            while_writing += _writing(process.pid, out_dir)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=60)
            assert os.listdir(out_dir) == [name], (fmt, os.listdir(out_dir))
            if target.read_bytes() == old:
                outcomes["old"] += 1
            else:
                assert _same_export(fmt, target, reference_dir / name), fmt
                outcomes["new"] += 1
    with capsys.disabled():
        print(f"\n20 kills of an overwriting export ({while_writing} while it was writing its file): "
              f"{outcomes['old']} left the old file byte for byte, {outcomes['new']} the complete new one")
    assert sum(outcomes.values()) == 20
