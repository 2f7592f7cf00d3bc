"""The store's failures in one line: a full disk, a read-only file or folder, a lock held too long.

Real conditions where the machine allows: a tiny tmpfs and read-only bind mounts inside a user and
mount namespace (``unshare -r -m``, no root needed; skipped where the kernel forbids it), and in-process
SQLite's own limits (``max_page_count`` fills the database, ``query_only`` makes it read-only).
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from midog_viewer.errors import ReviewStoreError
from midog_viewer.review import ReviewStore
from midog_viewer.review import connection

ROOT = Path(__file__).resolve().parents[2]
BOX = np.array([[0, 0, 10, 10]], dtype=float)


def _filled(tmp_path, name="r.db", n=3):
    store = ReviewStore(tmp_path / name, reviewer="alice")
    slide = store.add_slide("a.tiff", 0.25, 1000, 1000)
    run = store.add_detection_run(slide, "m", {})
    ids = store.add_detections(run, np.tile(BOX, (n, 1)), [0.5] * n, ["mitotic figure"] * n)
    return store, slide, run, ids


def _one_line(message: str) -> None:
    assert "\n" not in message and "cannot rollback" not in message and message.endswith(".")


def test_full_disk_reports_the_full_disk_not_the_failed_rollback(tmp_path):
    store, slide, run, ids = _filled(tmp_path)
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages + 2}")  # SQLite's SQLITE_FULL, as on a full disk
    with pytest.raises(ReviewStoreError, match="is full") as info:
        store.add_detections(run, np.tile(BOX, (5000, 1)), [0.5] * 5000, ["mitotic figure"] * 5000)
    _one_line(str(info.value))
    assert len(store.objects(slide)) == 3  # all or nothing
    with pytest.raises(ReviewStoreError, match="is full"):  # one decision at a time fills it too
        for _ in range(10_000):
            store.decide(int(ids[0]), "accept")
    store._db.execute("PRAGMA max_page_count = 1073741823")  # space again: the store goes on
    store.decide(int(ids[1]), "reject")
    assert store.objects(slide).status.tolist()[1] == "rejected"
    assert store.integrity_check() == "ok"
    store.close()


def test_a_read_only_connection_refuses_writes_in_one_line(tmp_path):
    store, slide, _, ids = _filled(tmp_path)
    store._db.execute("PRAGMA query_only = ON")  # SQLITE_READONLY, as for a read-only file
    before = store.decisions()
    with pytest.raises(ReviewStoreError, match="read-only") as info:
        store.decide(int(ids[0]), "accept")
    _one_line(str(info.value))
    assert store.decisions() == before
    store.close()


def test_a_lock_held_too_long_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(connection, "BUSY_TIMEOUT_S", 0.2)
    store, _, _, ids = _filled(tmp_path)
    other = sqlite3.connect(tmp_path / "r.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another program holds the write lock
    try:
        with pytest.raises(ReviewStoreError, match="locked by another program") as info:
            store.decide(int(ids[0]), "accept")
        _one_line(str(info.value))
    finally:
        other.execute("ROLLBACK")
        other.close()
    store.decide(int(ids[0]), "accept")  # the lock is gone: it works again
    assert store.decisions()[-1].verdict == "accept"
    store.close()


@pytest.mark.slow  # waits out the real 10 s lock timeout
def test_commands_on_a_locked_store_exit_2_with_one_line(tmp_path):
    store, _, _, _ = _filled(tmp_path)
    store.close()
    csv = tmp_path / "gt.csv"
    csv.write_text("image,label,x,y\na.tiff,mitotic figure,5,5\n")
    holder = sqlite3.connect(tmp_path / "r.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "midog_viewer", "import", str(csv), "--db", str(tmp_path / "r.db")],
            capture_output=True, text=True, cwd=ROOT, timeout=60,
        )
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "locked by another program" in result.stderr and "Traceback" not in result.stderr


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_another_tools_sqlite_file_is_refused_untouched(tmp_path):
    folder = tmp_path / "theirs"
    folder.mkdir()
    foreign = folder / "slides.sqlite"
    db = sqlite3.connect(foreign)
    db.execute("CREATE TABLE Annotations (uid INTEGER PRIMARY KEY, slide INTEGER, agreedClass INTEGER)")
    db.execute("INSERT INTO Annotations VALUES (1, 1, 2)")
    db.commit()
    db.close()
    before = _digest(folder)
    for read_only in (False, True):
        with pytest.raises(ReviewStoreError, match="not a midog-viewer review store"):
            ReviewStore(foreign, read_only=read_only)
        assert _digest(folder) == before  # same bytes, and no -wal or -shm beside it
    newer = tmp_path / "newer.db"
    ReviewStore(newer).close()
    raw = sqlite3.connect(newer)
    raw.execute("UPDATE schema_version SET version = 99")
    raw.commit()
    raw.close()
    size = newer.read_bytes()
    with pytest.raises(ReviewStoreError, match="newer"):
        ReviewStore(newer)
    assert newer.read_bytes() == size


def test_read_only_opening_reads_and_writes_nothing(tmp_path):
    store, slide, _, ids = _filled(tmp_path)
    store.decide(int(ids[0]), "reject")
    store.close()
    before = _digest(tmp_path)
    with ReviewStore(tmp_path / "r.db", read_only=True) as reader:
        assert reader.objects(slide).status.tolist() == ["rejected", "pending", "pending"]
        with pytest.raises(ReviewStoreError, match="opened read-only"):
            reader.decide(int(ids[1]), "accept")
        assert reader.checkpoint()
    after = _digest(tmp_path)
    assert after["r.db"] == before["r.db"]
    assert not (tmp_path / "r.db-wal").exists() or (tmp_path / "r.db-wal").stat().st_size == 0  # SQLite's reader files
    with pytest.raises(ReviewStoreError, match="no review database"):
        ReviewStore(tmp_path / "missing.db", read_only=True)
    assert not (tmp_path / "missing.db").exists()
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(ReviewStoreError, match="empty database"):
        ReviewStore(empty, read_only=True)


@pytest.mark.parametrize("name", ["my%20db.sqlite", "a#b.sqlite", "what?.sqlite", "x%3Fmode=rw.sqlite"])
def test_read_only_opening_quotes_odd_file_names(tmp_path, name):
    decoy, _, _, _ = _filled(tmp_path, name="my db.sqlite", n=1)  # what an unquoted %20 would open
    decoy.close()
    store, slide, _, _ = _filled(tmp_path, name=name, n=2)
    store.close()
    with ReviewStore(tmp_path / name, read_only=True) as reader:
        assert len(reader.objects(slide)) == 2


# -- real conditions in a user + mount namespace ---------------------------------------------------


def _namespaces_work(tmp_path) -> bool:
    if shutil.which("unshare") is None or sys.platform != "linux":
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    result = subprocess.run(["unshare", "-r", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {probe}"],
                            capture_output=True)
    return result.returncode == 0


@pytest.fixture
def sandbox(tmp_path):
    """Run a shell line in its own mount namespace, where mounts are allowed and vanish afterwards."""
    if not _namespaces_work(tmp_path):
        pytest.skip("no user and mount namespaces here (unshare -r -m) to mount a tiny or read-only disk")

    def run(setup: str, *argv: str) -> subprocess.CompletedProcess:
        line = f"{setup} && cd {shlex.quote(str(ROOT))} && exec {shlex.join(argv)}"
        return subprocess.run(["unshare", "-r", "-m", "sh", "-c", line], capture_output=True, text=True, timeout=120)

    return run


def _read_only(folder: Path) -> str:
    f = shlex.quote(str(folder))
    return f"mount --bind {f} {f} && mount -o remount,bind,ro {f}"


def _cli(*args: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "midog_viewer", *args)


def test_a_store_in_a_read_only_folder_can_be_exported_and_counted(tmp_path, sandbox):
    folder = tmp_path / "archive"
    folder.mkdir()
    store, _, _, ids = _filled(folder, name="reviews.sqlite")
    store.decide(int(ids[0]), "accept")
    store.close()
    before = _digest(folder)
    out = tmp_path / "out.csv"
    exported = sandbox(_read_only(folder), *_cli("export", "--db", str(folder / "reviews.sqlite"), "--format", "csv",
                                                 "--out", str(out)))
    assert exported.returncode == 0, exported.stderr
    assert "accepted" in out.read_text()
    counted = sandbox(_read_only(folder), *_cli("counts", "--db", str(folder / "reviews.sqlite"), "--json"))
    assert counted.returncode == 0, counted.stderr
    assert '"accepted": 1' in counted.stdout
    csv = tmp_path / "gt.csv"
    csv.write_text("image,label,x,y\na.tiff,mitotic figure,5,5\n")
    refused = sandbox(_read_only(folder), *_cli("import", str(csv), "--db", str(folder / "reviews.sqlite")))
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "read-only" in refused.stderr
    assert _digest(folder) == before


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, sandbox):
    disk = tmp_path / "disk"
    disk.mkdir()
    csv = tmp_path / "many.csv"
    rng = np.random.default_rng(0)
    rows = "".join(f"a.tiff,mitotic figure,{x:.1f},{y:.1f}\n" for x, y in rng.uniform(0, 1e5, (20_000, 2)))
    csv.write_text("image,label,x,y\n" + rows)
    d = shlex.quote(str(disk))
    result = sandbox(f"mount -t tmpfs -o size=256k tmpfs {d}",
                     "sh", "-c", f"{shlex.join(_cli('import', str(csv), '--db', str(disk / 'r.sqlite')))}; "
                                 f"status=$?; ls -A {d}; exit $status")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "is full" in result.stderr, result.stderr
    assert "rollback" not in result.stderr and result.stdout == ""  # and the new database was removed


def test_read_only_opening_of_a_file_that_is_not_a_database(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(ReviewStoreError, match="not a usable review database"):
        ReviewStore(junk, read_only=True)
    assert junk.read_bytes() == b"this is not sqlite at all" * 100


WRITER_THEN_KILLED = """
import sys, time
import numpy as np
from midog_viewer.review import ReviewStore
store = ReviewStore(sys.argv[1], reviewer="w")
slide = store.add_slide("a.tiff", 0.25, 1000, 1000)
run = store.add_detection_run(slide, "m", {})
ids = store.add_detections(run, np.array([[0, 0, 10, 10]], dtype=float), [0.5], ["mitotic figure"])
store.decide(int(ids[0]), "accept")
print("decided", flush=True)
time.sleep(120)
"""


def test_a_killed_writers_log_is_read_in_a_read_only_folder(tmp_path, sandbox):
    folder = tmp_path / "archive"
    folder.mkdir()
    db = folder / "reviews.sqlite"
    writer = subprocess.Popen([sys.executable, "-c", WRITER_THEN_KILLED, str(db)], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT)
    try:
        assert writer.stdout.readline().strip() == "decided"
    finally:
        writer.kill()
        writer.wait()
    assert Path(f"{db}-wal").stat().st_size > 0  # the decision is only in the log
    counted = sandbox(_read_only(folder), *_cli("counts", "--db", str(db), "--json"))
    assert counted.returncode == 0, counted.stderr
    assert '"accepted": 1' in counted.stdout  # read from the -wal, not an out-of-date main file
    Path(f"{db}-shm").unlink()  # a log without its index, in a folder where the index cannot be made
    again = sandbox(_read_only(folder), *_cli("counts", "--db", str(db), "--json"))
    if again.returncode == 0:  # newer SQLite reads such a log without an index
        assert '"accepted": 1' in again.stdout
    else:
        assert again.returncode == 2 and again.stderr.count("\n") == 1, again.stderr
        assert "-wal to a writable folder" in again.stderr
