"""``midog-viewer batch`` refuses bad arguments with one line and exit 2, before any cluster starts."""

from __future__ import annotations

import pytest

from midog_viewer.cli import main


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--workers", "0"], "--workers must be at least 1"),
        (["--score-thr", "2"], "between 0 and 1"),
        (["--report", "{tmp}/no/such/folder/r.csv"], "not a file in an existing folder"),
        (["--report", "{tmp}/r.txt"], "must end in .csv"),
        (["--model", "{tmp}/missing.safetensors"], "missing.safetensors"),
        (["{tmp}/missing.svs"], "does not exist"),
        (["{tmp}/empty"], "holds no slides"),
        (["--resources", "GPU"], "NAME=AMOUNT"),
        (["--resources", "GPU=0"], "NAME=AMOUNT"),
        (["--resources", "GPU=one"], "NAME=AMOUNT"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(tmp_path, capsys, extra, message):
    (tmp_path / "empty").mkdir()
    slide = tmp_path / "s.tiff"
    slide.write_bytes(b"II*\x00")
    db = tmp_path / "cohort.db"
    extra = [part.format(tmp=tmp_path) for part in extra]
    paths, options = (extra, []) if not extra[0].startswith("--") else ([], extra)
    args = ["batch", str(slide), *paths, "--db", str(db), "--report", str(tmp_path / "r.csv"), *options]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not db.exists() and not (tmp_path / "r.csv").exists()  # nothing started, nothing left behind


def test_scheduler_and_workers_exclude_each_other(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["batch", str(tmp_path), "--db", "x.db", "--report", "r.csv", "--workers", "2", "--scheduler", "tcp://x:1"])
    assert stop.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
