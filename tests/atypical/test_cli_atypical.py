"""``classify-atypical`` and ``train-atypical`` as a user runs them: CSV rows, one-line errors, resume."""

from __future__ import annotations

import csv
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import midog_viewer
from midog_viewer.cli import main


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "midog_viewer", *args], capture_output=True, text=True, timeout=300)


def test_folders_and_files_give_one_row_each_at_the_models_threshold(tiny_run, crop_folder, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    single = crop_folder / "atnorm_md" / "0_0.png"
    status = main(["classify-atypical", str(crop_folder / "amibr"), str(single), "--model", str(tiny_run.model_path),
                   "--out", str(out)])
    assert status == 0, capsys.readouterr().err
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["file", "p_atypical", "atypical"]
    assert len(rows) == 36 + 1 and rows[-1]["file"] == str(single)
    for row in rows:
        assert 0.0 <= float(row["p_atypical"]) <= 1.0
        assert row["atypical"] == str(int(float(row["p_atypical"]) >= tiny_run.threshold))


def test_a_file_that_is_not_an_image_is_one_line_and_exit_2_and_no_csv(tiny_run, crop_folder, tmp_path):
    bogus = tmp_path / "notes.png"
    bogus.write_text("not a picture")
    out = tmp_path / "scores.csv"
    result = _run("classify-atypical", str(crop_folder / "amibr" / "0_0.png"), str(bogus),
                  "--model", str(tiny_run.model_path), "--out", str(out))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "notes.png is not a readable image" in result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [bogus]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.png", "does not exist"),
        (lambda p: p, "holds no image files"),
        (lambda p: _sixteen_bit(p), "only 8-bit"),
    ],
)
def test_other_bad_inputs_are_one_line_and_exit_2(tiny_run, tmp_path, capsys, make, message):
    out = tmp_path / "o.csv"
    status = main(["classify-atypical", str(make(tmp_path)), "--model", str(tiny_run.model_path), "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 2 and message in err and err.count("\n") == 1 and not out.exists()


def _sixteen_bit(folder):
    path = folder / "deep.png"
    Image.new("I;16", (40, 40)).save(path)
    return path


def test_bad_model_and_bad_out_are_one_line(crop_folder, tmp_path, capsys):
    crop = str(crop_folder / "amibr" / "0_0.png")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"junk")
    assert main(["classify-atypical", crop, "--model", str(junk), "--out", str(tmp_path / "o.csv")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["classify-atypical", crop, "--out", str(tmp_path / "o.txt")]) == 2
    assert ".csv" in capsys.readouterr().err


@pytest.mark.slow
def test_train_atypical_prints_progress_and_resumes(crop_folder, tmp_path):
    run = tmp_path / "run"
    common = ["--batch-size", "8", "--log-every", "2", "--val-fraction", "0.4"]
    first = _run("train-atypical", "--data", str(crop_folder), "--out", str(run), "--epochs", "1", *common)
    assert first.returncode == 0, first.stderr
    assert "training on" in first.stderr and "step 2/" in first.stderr and "epoch 1: validation" in first.stderr
    again = _run("train-atypical", "--data", str(crop_folder), "--out", str(run), "--epochs", "1")
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "already holds a run" in again.stderr
    resumed = _run("train-atypical", "--out", str(run), "--resume", str(run), "--epochs", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert "epoch 2: validation" in resumed.stderr and "epoch 1: validation" not in resumed.stderr
    assert (run / "model.safetensors").is_file() and "done: validation balanced accuracy" in resumed.stdout


def test_the_shipped_model_scores_real_crops(shared_data, tmp_path, capsys):
    crops = sorted((shared_data / "real_mitosis" / "atnorm_md").glob("*.png"))[:6]
    out = tmp_path / "real.csv"
    assert main(["classify-atypical", *map(str, crops), "--out", str(out)]) == 0, capsys.readouterr().err
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["file"] for r in rows] == list(map(str, crops))
    assert all(0 <= float(r["p_atypical"]) <= 1 and r["atypical"] in ("0", "1") for r in rows)


class _Hostile:
    """A pickle that would run a command when loaded without weights_only."""

    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


def _misfit_optimizer(run):
    state = torch.load(run / "state.pt", weights_only=True)
    return {**state, "optimizer": {"state": {}, "param_groups": [1]}}  # load_state_dict raises TypeError


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda path, run: path.write_bytes(b""), "the file is empty"),
        (lambda path, run: torch.save({"model": _Hostile()}, path), "loads weights only"),
        (lambda path, run: torch.save([1, 2, 3], path), "not the training state"),
        (lambda path, run: torch.save({"model": {}, "optimizer": {}, "step": -1}, path), "not the training state"),
        (lambda path, run: torch.save(_misfit_optimizer(run), path), "does not fit this model"),
    ],
)
def test_resume_with_a_hostile_or_broken_state_is_one_line_and_leaves_the_run(tiny_run, tmp_path, capsys, monkeypatch,
                                                                              write, message):
    run = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run)
    write(run / "state.pt", run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    monkeypatch.chdir(tmp_path)
    status = main(["train-atypical", "--out", str(run), "--resume", str(run), "--epochs", "4"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and message in err, err
    assert "weights_only" not in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before and not (tmp_path / "pwned").exists()


def test_resume_with_a_hostile_state_prints_no_torch_advice(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run)
    torch.save({"model": _Hostile()}, run / "state.pt")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    result = subprocess.run([sys.executable, "-m", "midog_viewer", "train-atypical", "--out", str(run), "--resume",
                             str(run)], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(Path(midog_viewer.__file__).parents[1])})
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Re-running" not in result.stderr, result.stderr
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before and not (tmp_path / "pwned").exists()


def test_a_bad_file_is_refused_before_any_crop_is_decoded_or_the_model_loaded(crop_folder, tmp_path, capsys,
                                                                             monkeypatch):
    from midog_viewer.atypical import classify

    bogus = tmp_path / "last.png"
    bogus.write_text("not a picture")
    decoded = []
    monkeypatch.setattr(classify, "read_rgb", lambda path: decoded.append(path))
    monkeypatch.setattr(classify, "load_classifier", lambda *a: pytest.fail("the model was loaded"))
    out = tmp_path / "o.csv"
    assert main(["classify-atypical", str(crop_folder / "amibr"), str(bogus), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "last.png is not a readable image" in err
    assert decoded == [] and not out.exists()


def test_crops_stream_through_scoring_in_batches(tiny_run, crop_folder, monkeypatch):
    from midog_viewer.atypical import classify

    events = []
    real_read, real_predict = classify.read_rgb, classify.predict_proba
    monkeypatch.setattr(classify, "BATCH", 4)
    monkeypatch.setattr(classify, "read_rgb", lambda path: events.append("read") or real_read(path))
    monkeypatch.setattr(classify, "predict_proba",
                        lambda model, x, **k: events.append(len(x)) or real_predict(model, x, **k))
    files = classify.collect_images([crop_folder / "amibr"])
    rows = classify.classify_files(files, model_path=tiny_run.model_path)
    assert len(rows) == len(files) == 36
    held = 0
    for event in events:  # never more than one batch of decoded crops waits for scoring
        held = held + 1 if event == "read" else held - event
        assert 0 <= held <= 4
    assert held == 0


def test_the_csv_is_written_atomically_and_never_over_a_non_file(tiny_run, crop_folder, tmp_path, capsys,
                                                                 monkeypatch):
    crop = str(crop_folder / "amibr" / "0_0.png")
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    assert main(["classify-atypical", crop, "--model", str(tiny_run.model_path), "--out", str(fifo)]) == 2
    assert "not a regular file" in capsys.readouterr().err and stat.S_ISFIFO(fifo.stat().st_mode)
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    out = tmp_path / "o.csv"
    assert main(["classify-atypical", crop, "--model", str(tiny_run.model_path), "--out", str(out)]) == 0
    assert synced and sorted(p.name for p in tmp_path.iterdir()) == ["o.csv", "pipe.csv"]
