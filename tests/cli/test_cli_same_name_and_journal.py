"""--slide with a file name two slides share is refused in one line; a failed import leaves no -journal."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from midog_viewer.cli import main
from midog_viewer.review import ReviewStore


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def two_001(tmp_path):
    """A store with a/001.png (one annotation) and b/001.png (two): same file name, different slides."""
    db = tmp_path / "r.sqlite"
    paths = []
    with ReviewStore(db, reviewer="t") as store:
        for folder, n in (("a", 1), ("b", 2)):
            (tmp_path / folder).mkdir()
            image = tmp_path / folder / "001.png"
            image.write_bytes(folder.encode())
            slide_id = store.add_slide(image, 0.25, 1000, 1000)
            boxes = np.array([[100 * i, 10, 100 * i + 50, 60] for i in range(n)], float)  # distinct cells
            store.add_annotations(slide_id, boxes, ["mitotic figure"] * n, "ground truth")
            paths.append(str(image.resolve()))
    return db, paths


@pytest.mark.parametrize("command", ["export", "counts"])
def test_a_slide_name_two_slides_share_is_refused_naming_both(capsys, tmp_path, two_001, command):
    db, (a, b) = two_001
    output = ["--format", "csv", "--out", tmp_path / "o.csv"] if command == "export" else []
    code, out, err = run(capsys, command, "--db", db, *output, "--slide", "001.png")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err and out == ""
    assert "2 slides" in err and a in err and b in err
    assert not (tmp_path / "o.csv").exists()


def test_export_and_counts_of_a_full_path_take_that_slide(capsys, tmp_path, two_001):
    db, (_, b) = two_001
    code, _, err = run(capsys, "export", "--db", db, "--format", "csv", "--out", tmp_path / "b.csv", "--slide", b)
    assert code == 0, err
    with open(tmp_path / "b.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 2  # b's two, not a's one
    code, out, err = run(capsys, "counts", "--db", db, "--json", "--slide", b, "--mpp", "0.25")
    assert code == 0, err
    assert [s["totals"]["mitoses"] for s in json.loads(out)["slides"]] == [2]


def test_a_failed_import_into_a_new_database_leaves_no_journal_either(tmp_path, monkeypatch):
    source = tmp_path / "labels.json"
    source.write_text("{}")

    def crash_mid_write(store, *args, **kwargs):
        Path(f"{store.path}-journal").write_bytes(b"")  # SQLite's rollback journal of a write cut short
        raise RuntimeError("killed mid-import")

    monkeypatch.setattr("midog_viewer.review.importing.import_file", crash_mid_write)
    with pytest.raises(RuntimeError):
        main(["import", str(source), "--db", str(tmp_path / "new.db")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.json"]
