"""Everything open_slide cannot read raises SlideError with one sentence naming the file."""

from __future__ import annotations

import builtins
import struct
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from midog_viewer.errors import MidogError, SlideError
from midog_viewer.io import open_slide


def _valid_tiff(path: Path) -> Path:
    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    tifffile.imwrite(path, image, photometric="rgb", tile=(64, 64), compression="zlib", metadata=None)
    return path


def _with_tag(source: Path, target: Path, tag: str, value: int) -> Path:
    """A copy of ``source`` whose one-value integer ``tag`` holds ``value``."""
    with tifffile.TiffFile(source) as tif:
        entry = tif.pages[0].tags[tag]
        offset, fmt = entry.valueoffset, "<H" if entry.dtype == 3 else "<I"
    data = bytearray(source.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    target.write_bytes(bytes(data))
    return target


def _make_bad_inputs(folder: Path) -> dict[str, tuple[Path, str]]:
    """name → (path, a phrase the error must contain)."""
    bad: dict[str, tuple[Path, str]] = {}
    bad["missing"] = (folder / "nope.svs", "does not exist")
    (folder / "empty_dir").mkdir()
    bad["directory"] = (folder / "empty_dir", "folder without DICOM")
    (folder / "notes.txt").write_text("mitoses: 12\n")
    bad["text"] = (folder / "notes.txt", "not a slide")
    (folder / "zero.tif").write_bytes(b"")
    bad["zero_bytes"] = (folder / "zero.tif", "empty (0 bytes)")
    data = _valid_tiff(folder / "full.tif").read_bytes()
    (folder / "truncated.tif").write_bytes(data[: len(data) // 2])
    bad["truncated"] = (folder / "truncated.tif", "truncated")
    (folder / "garbage.tif").write_bytes(b"II*\x00" + bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8)))
    bad["corrupt_header"] = (folder / "garbage.tif", "no readable image")
    corrupt = bytearray(data)
    page = tifffile.TiffFile(folder / "full.tif").pages[0]
    start = page.dataoffsets[0]
    corrupt[start : start + page.databytecounts[0]] = b"\xff" * page.databytecounts[0]
    (folder / "bad_tiles.tif").write_bytes(bytes(corrupt))
    bad["corrupt_tiles"] = (folder / "bad_tiles.tif", "damaged TIFF")
    tifffile.imwrite(folder / "u16.tif", np.zeros((64, 64), np.uint16))
    bad["sixteen_bit"] = (folder / "u16.tif", "uint16 pixels")
    tifffile.imwrite(folder / "float.tif", np.zeros((64, 64, 3), np.float32), photometric="rgb")
    bad["float"] = (folder / "float.tif", "float32 pixels")
    tifffile.imwrite(folder / "stack.tif", np.zeros((5, 64, 64, 3), np.uint8), photometric="rgb")
    bad["stack"] = (folder / "stack.tif", "unsupported layout")
    tifffile.imwrite(folder / "channels.tif", np.zeros((6, 64, 64), np.uint8), photometric="minisblack", planarconfig="separate")
    bad["six_channels"] = (folder / "channels.tif", "unsupported layout")
    Image.fromarray(np.zeros((64, 64), np.uint16)).save(folder / "u16.png")
    bad["png_16_bit"] = (folder / "u16.png", "not 8-bit")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 100)
    bad["broken_jpeg"] = (folder / "broken.jpg", "not a readable PNG or JPEG")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(folder / "image.bmp")
    bad["bmp"] = (folder / "image.bmp", "not a slide")
    (folder / "fake.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x00" * 64)
    bad["fake_dicom"] = (folder / "fake.dcm", "DICOM")
    bad["zero_width"] = (_with_tag(folder / "full.tif", folder / "no_width.tif", "ImageWidth", 0), "0 × 256 px")
    bad["zero_height"] = (_with_tag(folder / "full.tif", folder / "no_height.tif", "ImageLength", 0), "256 × 0 px")
    (folder / "garbage_dicom").mkdir()
    for k in range(3):
        (folder / "garbage_dicom" / f"{k}.dcm").write_bytes(b"\x00" * 128 + b"DICM" + bytes(range(256)) * 4)
    bad["garbage_dicom_folder"] = (folder / "garbage_dicom", "not a readable DICOM")
    return bad


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    return _make_bad_inputs(tmp_path_factory.mktemp("bad"))


BAD_NAMES = [
    "missing", "directory", "text", "zero_bytes", "truncated", "corrupt_header", "corrupt_tiles", "sixteen_bit",
    "float", "stack", "six_channels", "png_16_bit", "broken_jpeg", "bmp", "fake_dicom", "zero_width", "zero_height",
    "garbage_dicom_folder",
]


def test_every_bad_input_is_listed(bad_inputs):
    assert sorted(bad_inputs) == sorted(BAD_NAMES)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_input_raises_one_sentence(bad_inputs, name):
    path, phrase = bad_inputs[name]
    with pytest.raises(SlideError) as info:
        open_slide(path)
    message = str(info.value)
    assert isinstance(info.value, MidogError)
    assert phrase in message
    assert path.name in message
    assert "\n" not in message and len(message) < 300


def test_smalltif_from_shared_data_is_refused(shared_data):
    with pytest.raises(SlideError, match="8-bit"):
        open_slide(shared_data / "slides" / "smalltif.tif")


def _deny(monkeypatch, folder: Path, listing: bool) -> None:
    """Act as a user who may not open the files in ``folder`` (nor list it, unless ``listing``): tests run as root."""
    real_open, real_iterdir = builtins.open, Path.iterdir

    def guarded_open(file, *args, **kwargs):
        if isinstance(file, (str, Path)) and Path(file).parent == folder:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    def guarded_iterdir(self):
        if self == folder and not listing:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(Path, "iterdir", guarded_iterdir)


@pytest.mark.parametrize("what", ["unlistable_folder", "unreadable_files", "unreadable_file"])
def test_an_unreadable_dicom_folder_or_file_is_one_sentence(tmp_path, monkeypatch, what):
    folder = tmp_path / "dicom"
    folder.mkdir()
    for k in range(2):
        (folder / f"{k}.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x00" * 64)
    target = folder / "0.dcm" if what == "unreadable_file" else folder
    _deny(monkeypatch, folder, listing=what != "unlistable_folder")
    with pytest.raises(SlideError) as info:
        open_slide(target)
    message = str(info.value)
    assert message.startswith(f"{target} cannot be read") and "Permission denied" in message
    assert "\n" not in message and len(message) < 300
