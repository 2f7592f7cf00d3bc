"""``midog-viewer info`` and ``open``: output, the --json schema, and one stderr line + exit 2 for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from midog_viewer.cli import main


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "slide.ome.tif"
    image = np.random.default_rng(0).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    with tifffile.TiffWriter(path, ome=True) as tw:
        options = dict(photometric="rgb", tile=(64, 64), compression="zlib")
        tw.write(image, subifds=1, metadata={"axes": "YXS", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25}, **options)
        tw.write(image[::2, ::2], subfiletype=1, **options)
    return path


@pytest.fixture(scope="module")
def bad_paths(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    (folder / "notes.txt").write_text("not a slide")
    (folder / "zero.svs").write_bytes(b"")
    tifffile.imwrite(folder / "whole.tif", np.random.default_rng(1).integers(0, 256, (128, 128, 3), dtype=np.uint8),
                     photometric="rgb", compression="zlib", metadata=None)
    data = (folder / "whole.tif").read_bytes()
    (folder / "truncated.tif").write_bytes(data[: len(data) // 3])
    (folder / "corrupt.tif").write_bytes(b"MM\x00*" + b"\x13" * 500)
    tifffile.imwrite(folder / "u16.tif", np.zeros((16, 16), np.uint16))
    (folder / "empty").mkdir()
    names = ["missing.svs", "empty", "notes.txt", "zero.svs", "truncated.tif", "corrupt.tif", "u16.tif"]
    return [folder / name for name in names]


def test_info_text(pyramid, capsys):
    assert main(["info", str(pyramid)]) == 0
    out = capsys.readouterr().out
    assert "format:  ome-tiff" in out and "mpp:     0.25 µm/px" in out and "tile:    64 × 64" in out
    assert "0: 500 × 300" in out and "1: 250 × 150" in out


def test_info_json_schema(pyramid, capsys):
    assert main(["info", str(pyramid), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary) == {"path", "format", "mpp", "tile", "levels"}
    assert summary["path"] == str(pyramid) and summary["format"] == "ome-tiff"
    assert summary["mpp"] == pytest.approx(0.25) and summary["tile"] == [64, 64]
    assert summary["levels"] == [
        {"width": 500, "height": 300, "downsample": 1.0},
        {"width": 250, "height": 150, "downsample": 2.0},
    ]
    for level in summary["levels"]:
        assert isinstance(level["width"], int) and isinstance(level["downsample"], float)


def test_info_json_nulls_for_unknown_pixel_size_and_strips(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((40, 60, 3), np.uint8), photometric="rgb", metadata=None)
    assert main(["info", "--json", str(tmp_path / "plain.tif")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["mpp"] is None and summary["tile"] is None and len(summary["levels"]) == 1


def test_info_on_the_real_svs(shared_data, capsys):
    assert main(["info", "--json", str(shared_data / "slides" / "CMU-1-Small-Region.svs")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["format"] == "aperio-svs" and summary["mpp"] == pytest.approx(0.499)
    assert summary["levels"][0] == {"width": 2220, "height": 2967, "downsample": 1.0}


@pytest.mark.parametrize("command", ["info", "open"])
def test_bad_input_is_one_stderr_line_and_exit_2(bad_paths, capsys, command):
    for path in bad_paths:
        assert main([command, str(path)]) == 2, path
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("midog-viewer: error: "), captured.err
        assert path.name in lines[0] and "Traceback" not in captured.err
        assert captured.out == ""


def test_no_command_opens_the_sample(monkeypatch):
    from midog_viewer._qt import viewer

    opened = []
    monkeypatch.setattr(viewer, "open_viewer", lambda paths: opened.append(list(paths)))
    monkeypatch.setattr(viewer.napari, "run", lambda: opened.append("run"))
    assert main([]) == 0
    assert opened == [[], "run"]


def test_console_script_exit_status_and_help(bad_paths):
    result = subprocess.run(
        [sys.executable, "-m", "midog_viewer", "info", str(bad_paths[4])], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "truncated" in result.stderr
    help_text = subprocess.run(
        [sys.executable, "-m", "midog_viewer", "--help"], capture_output=True, text=True, timeout=120
    ).stdout
    assert "open" in help_text and "info" in help_text
