"""``midog-viewer info`` and ``open``: output, the --json schema, and one stderr line + exit 2 for bad input."""

from __future__ import annotations

import builtins
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

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
    with tifffile.TiffFile(folder / "whole.tif") as tif:
        width_at = tif.pages[0].tags["ImageWidth"].valueoffset
    struct.pack_into("<H" if data[:2] == b"II" else ">H", zero_width := bytearray(data), width_at, 0)
    (folder / "no_width.tif").write_bytes(bytes(zero_width))
    # 8,000² px in one deflate strip: 192 MB decoded from a file of a few hundred kB
    packer, band = zlib.compressobj(1), bytes(8_000 * 3 * 500)
    strip = b"".join(packer.compress(band) for _ in range(16)) + packer.flush()
    tifffile.imwrite(folder / "bomb.tif", iter([strip]), shape=(8_000, 8_000, 3), dtype=np.uint8,
                     photometric="rgb", compression="zlib", rowsperstrip=8_000, metadata=None)
    (folder / "garbage_dicom").mkdir()
    (folder / "garbage_dicom" / "1.dcm").write_bytes(b"\x00" * 128 + b"DICM" + bytes(range(256)) * 4)
    names = ["missing.svs", "empty", "notes.txt", "zero.svs", "truncated.tif", "corrupt.tif", "u16.tif",
             "no_width.tif", "bomb.tif", "garbage_dicom"]
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


@pytest.mark.slow
def test_detect_on_bad_input_is_one_stderr_line_and_exit_2(bad_paths, capsys, tmp_path):
    for path in bad_paths:
        out = tmp_path / "found.json"
        assert main(["detect", str(path), "--device", "cpu", "--out", str(out)]) == 2, path
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("midog-viewer: error: "), captured.err
        assert path.name in lines[0] and not out.exists()


def test_the_bomb_is_refused_naming_its_size(bad_paths, capsys):
    assert main(["info", str(bad_paths[8])]) == 2
    assert "decode to 192 MB each" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["info", "open", "detect"])
def test_an_unreadable_dicom_folder_is_one_stderr_line_and_exit_2(tmp_path, monkeypatch, capsys, command):
    folder = tmp_path / "dicom"
    folder.mkdir()
    (folder / "1.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x00" * 64)
    real_open = builtins.open

    def denied(file, *args, **kwargs):  # the tests run as root: permission is simulated
        if isinstance(file, (str, Path)) and Path(file).parent == folder:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", denied)
    extra = ["--device", "cpu", "--out", str(tmp_path / "o.json")] if command == "detect" else []
    assert main([command, str(folder), *extra]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "cannot be read" in lines[0] and "Permission denied" in lines[0], captured.err
    assert captured.out == ""


def test_info_on_a_bad_pixel_size_prints_unknown_and_one_warning_line(tmp_path):
    path = tmp_path / "bad_mpp.svs"
    description = "Aperio Image Library v12.0.0 \n64x48 (256x256) JPEG/RGB Q=90|AppMag = 40|MPP = abc"
    tifffile.imwrite(path, np.zeros((48, 64, 3), np.uint8), photometric="rgb", tile=(16, 16), description=description)
    result = subprocess.run([sys.executable, "-m", "midog_viewer", "info", str(path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "mpp:     unknown" in result.stdout
    assert result.stderr.strip().splitlines() == [
        "bad_mpp.svs: its Aperio MPP 'abc' is not a pixel size; reading it with the pixel size unknown."
    ]


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
