"""A broken pixel-size tag leaves a readable image readable: mpp unknown, one warning (issue 10, item 13)."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import numpy as np
import pytest
import tifffile

from midog_viewer.io import open_slide

BAD_VALUES = ["abc", "-1", "0", "inf", "nan", "1e", "."]
IMAGE = np.random.default_rng(3).integers(0, 256, (64, 48, 3), dtype=np.uint8)


def _svs(path: Path, value: str) -> Path:
    description = f"Aperio Image Library v12.0.0 \n48x64 (256x256) JPEG/RGB Q=90|AppMag = 40|MPP = {value}"
    tifffile.imwrite(path, IMAGE, photometric="rgb", tile=(16, 16), description=description, metadata=None)
    return path


def _ome(path: Path, value: str) -> Path:
    with tifffile.TiffWriter(path, ome=True) as tw:
        tw.write(IMAGE, photometric="rgb", metadata={"axes": "YXS"})
    with tifffile.TiffFile(path) as tif:
        xml = tif.ome_metadata
    tifffile.tiffcomment(path, xml.replace("<Pixels ", f'<Pixels PhysicalSizeX="{value}" ', 1).encode())
    return path


def _resolution(path: Path, numerator: int) -> Path:
    """A TIFF in centimetres whose XResolution is ``numerator``/1 pixels per cm (0: no pixel size)."""
    tifffile.imwrite(path, IMAGE, photometric="rgb", resolution=(4e4, 4e4), resolutionunit="CENTIMETER", metadata=None)
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[0].tags["XResolution"].valueoffset
    data = bytearray(path.read_bytes())
    struct.pack_into("<II", data, offset, numerator, 1)
    path.write_bytes(bytes(data))
    return path


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "midog_viewer.io" and r.levelno == logging.WARNING]


@pytest.mark.parametrize("value", BAD_VALUES)
@pytest.mark.parametrize("kind, field", [("svs", "Aperio MPP"), ("ome", "OME PhysicalSizeX")])
def test_a_bad_pixel_size_is_read_as_unknown_with_one_warning(tmp_path, caplog, kind, field, value):
    path = (_svs if kind == "svs" else _ome)(tmp_path / f"bad.{kind}.tif", value)
    with caplog.at_level(logging.WARNING, logger="midog_viewer.io"), open_slide(path) as slide:
        assert slide.mpp is None
        assert np.array_equal(slide.read_region(0, 0, 48, 64), IMAGE)
    messages = _warnings(caplog)
    assert len(messages) == 1 and "\n" not in messages[0]
    assert messages[0].startswith(f"{path.name}: its {field} {value!r} is not a pixel size")
    assert "unknown" in messages[0]


def test_a_zero_x_resolution_is_unknown_with_one_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="midog_viewer.io"), open_slide(_resolution(tmp_path / "r.tif", 0)) as slide:
        assert slide.mpp is None
    assert len(_warnings(caplog)) == 1 and "XResolution" in _warnings(caplog)[0]


@pytest.mark.parametrize("kind", ["svs", "ome"])
def test_a_good_or_merely_implausible_pixel_size_gives_no_warning(tmp_path, caplog, kind):
    write = _svs if kind == "svs" else _ome
    with caplog.at_level(logging.WARNING, logger="midog_viewer.io"):
        with open_slide(write(tmp_path / f"good.{kind}.tif", "0.25")) as slide:
            assert slide.mpp == pytest.approx(0.25)
        with open_slide(write(tmp_path / f"dpi.{kind}.tif", "352.7")) as slide:  # a 72-dpi default: unknown, silently
            assert slide.mpp is None
        with open_slide(_resolution(tmp_path / "res.tif", 40_000)) as slide:
            assert slide.mpp == pytest.approx(0.25)
    assert _warnings(caplog) == []
