"""``train --resume`` with a hostile or damaged ``state.pt``: one line in our words, exit 2, nothing run or written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from midog_viewer.cli import main
from midog_viewer.train import DataSpec, Recipe

ROOT = Path(__file__).resolve().parents[2]


class _Payload:
    def __init__(self, victim: Path) -> None:
        self.victim = victim

    def __reduce__(self):
        return (os.system, (f"touch {self.victim}",))


def _run_folder(tmp_path: Path) -> Path:
    """A run folder as ``train`` leaves it, its state.pt still to be written by the test."""
    run = tmp_path / "run"
    run.mkdir()
    record = {"config": "tiny", "recipe": Recipe(patch_size=128).to_dict(), "init": None, "baseline": None,
              "data": DataSpec(synthetic=3, synthetic_size=256, val_fraction=0.34).to_dict()}
    (run / "run.json").write_text(json.dumps(record))
    return run


def _listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.slow
@pytest.mark.parametrize("case", ["code", "protocol 4"])
def test_a_hostile_state_is_one_line_without_torchs_advice(tmp_path, case):
    run = _run_folder(tmp_path)
    victim = tmp_path / "pwned"
    if case == "code":
        torch.save({"model": {}, "step": 0, "x": _Payload(victim)}, run / "state.pt")
    else:  # harmless, but torch's reader cannot read protocol 4 and warns about it on stderr
        torch.save({"model": {}, "step": 0}, run / "state.pt", pickle_protocol=4)
    before = _listing(run)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "midog_viewer", "train", "--resume", str(run), "--out", str(run)],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"midog-viewer: error: refusing to load {run / 'state.pt'}: ")
    if case == "code":
        assert "Python objects other than tensors (posix.system); midog-viewer loads weights only" in lines[0]
    else:
        assert "FRAME" in lines[0]
    assert "weights_only" not in done.stderr and "Warning" not in done.stderr
    assert not victim.exists()
    assert _listing(run) == before


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (b"", "the file is empty"),
        (b"\x80\x02}q\x00.", "not a checkpoint written by torch.save"),
        ({"model": {}, "step": 0}, "is not the training state midog-viewer saves"),
        ([1, 2, 3], "is not the training state midog-viewer saves"),
        ("code", "Python objects other than tensors (posix.system); midog-viewer loads weights only"),
        ("protocol 4", "its pickle uses the FRAME instruction"),
    ],
)
def test_a_damaged_foreign_or_hostile_state_is_one_line(tmp_path, capsys, state, message):
    """In process, and quicker: the same refusals, and torch's warnings silenced rather than shown."""
    run = _run_folder(tmp_path)
    victim = tmp_path / "pwned"
    if isinstance(state, bytes):
        (run / "state.pt").write_bytes(state)
    elif state == "code":
        torch.save({"model": {}, "x": _Payload(victim)}, run / "state.pt")
    elif state == "protocol 4":
        torch.save({"model": {}, "step": 0}, run / "state.pt", pickle_protocol=4)
    else:
        torch.save(state, run / "state.pt")
    before = _listing(run)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["train", "--resume", str(run), "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert "weights_only" not in err
    assert [str(w.message) for w in caught if "torch" in w.filename] == []
    assert not victim.exists()
    assert _listing(run) == before


def test_resume_without_out_continues_in_the_resumed_folder(tmp_path, capsys, monkeypatch):
    """The cancel message says "resume with --resume RUN": that alone is enough, --out defaults to RUN."""
    from midog_viewer.train.run import RunResult

    run = _run_folder(tmp_path)
    torch.save({"model": {}, "step": 0}, run / "state.pt")
    seen = {}

    def fake_train(data, out_dir, **kwargs):
        seen.update(out_dir=Path(out_dir), resume=Path(kwargs["resume"]))
        return RunResult("done", Path(out_dir), 0.5, 1, None, 1, 3)

    monkeypatch.setattr("midog_viewer.train.train", fake_train)
    assert main(["train", "--resume", str(run), "--json"]) == 0
    assert seen == {"out_dir": run, "resume": run}
    assert json.loads(capsys.readouterr().out)["run"] == str(run)


def test_train_without_out_or_resume_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", "tiny", "--synthetic", "3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out RUN_DIR" in err, err
    assert list(tmp_path.iterdir()) == []
