"""Strip and tile bombs: no read decodes more than a bounded number of bytes (issue 10, item 7).

A compressed strip or tile that decodes past ``MAX_DECODE_BYTES`` is refused before any pixel is decoded,
in one line that names the size; a large uncompressed strip is read in row bands. The bombs are written
here from pre-compressed zeros (the ``bomb_writer`` fixture), never stored.
"""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
import zlib

import numpy as np
import pytest
import tifffile

from midog_viewer.errors import SlideError
from midog_viewer.io import open_slide
from midog_viewer.io.levels import halve
from midog_viewer.io.strips import MAX_DECODE_BYTES, UncompressedStrips

#: Runs the CLI in a fresh interpreter and prints its peak RSS (MB) as the last stdout line. VmHWM, not
#: ru_maxrss: Linux carries ru_maxrss over from the forking (pytest) process through exec.
_PEAK_RSS = (
    "import re, sys\n"
    "from midog_viewer.cli import main\n"
    "status = main(sys.argv[1:])\n"
    "kb = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
    "print(f'peak_rss_mb={kb / 1024:.0f}')\n"
    "sys.exit(status)\n"
)


def _cli_peak(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    result = subprocess.run([sys.executable, "-c", _PEAK_RSS, *args], capture_output=True, text=True, timeout=300)
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("peak_rss_mb="), result.stdout + result.stderr
    return result, float(last.split("=")[1])


def _peak_bytes(read) -> int:
    tracemalloc.start()
    try:
        read()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_bomb_writer_writes_valid_deflate(zeros_deflater):
    for size in (10, 1 << 20, (3 << 20) + 123):
        assert zlib.decompress(zeros_deflater(size)) == bytes(size)


@pytest.fixture(scope="module")
def bombs(tmp_path_factory, bomb_writer):
    folder = tmp_path_factory.mktemp("bombs")
    return {
        "strip_20k": bomb_writer(folder / "strip_20k.tif", 20_000, 20_000),  # 1.2 GB in one 5 MB strip
        "strip_100k": bomb_writer(folder / "strip_100k.tif", 100_000, 100_000),  # 30 GB in one strip
        "tile_12k": bomb_writer(folder / "tile_12k.tif", 24_576, 12_288, tile=12_288),  # 453 MB tiles
        "tiled_20k": bomb_writer(folder / "tiled_20k.tif", 20_000, 20_000, tile=512),  # the honest twin
    }


@pytest.mark.parametrize("name, size, unit", [("strip_20k", "1.2 GB", "strips"), ("strip_100k", "30.0 GB", "strips"),
                                              ("tile_12k", "453 MB", "tiles")])
def test_a_bomb_is_refused_in_one_line_naming_its_size(bombs, name, size, unit):
    with pytest.raises(SlideError) as info:
        open_slide(bombs[name])
    message = str(info.value)
    assert bombs[name].name in message and f"compressed {unit} that decode to {size} each" in message
    assert f"at most {MAX_DECODE_BYTES / 1e6:.0f} MB" in message and "tiled TIFF" in message
    assert "\n" not in message and "MemoryError" not in message


def test_a_tiled_twin_of_the_bomb_opens(bombs):
    with open_slide(bombs["tiled_20k"]) as slide:
        assert slide.read_region(10_000, 10_000, 256, 256).max() == 0


@pytest.mark.parametrize("name", ["strip_20k", "strip_100k"])
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmHWM from /proc")
def test_info_on_a_bomb_stays_as_small_as_on_its_tiled_twin(bombs, name):
    """Peak RSS of ``info`` in a fresh process: the bomb's refusal costs no more than the tiled image's summary."""
    refused, bomb_mb = _cli_peak("info", str(bombs[name]))
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("midog-viewer: error: ") and "decode to" in lines[0]
    opened, twin_mb = _cli_peak("info", str(bombs["tiled_20k"]))
    assert opened.returncode == 0, opened.stderr
    assert bomb_mb < twin_mb + 50 and bomb_mb < 400  # was 1.2 GB for strip_20k, a MemoryError for strip_100k


def _pattern(y0: int, y1: int, width: int, samples: int) -> np.ndarray:
    yy = np.arange(y0, y1, dtype=np.int32)[:, None, None]
    xx = np.arange(width, dtype=np.int32)[None, :, None]
    channel = np.arange(samples, dtype=np.int32)[None, None, :]
    return ((yy // 3 + xx // 7 + 50 * channel) % 256).astype(np.uint8)


@pytest.fixture(scope="module", params=["rgb", "gray"])
def one_strip(request, tmp_path_factory):
    """An uncompressed 6000 × 3600 image in a single strip (65 MB RGB, 22 MB gray), filled band by band."""
    height, width = 3600, 6000
    samples = 3 if request.param == "rgb" else 1
    path = tmp_path_factory.mktemp("onestrip") / f"{request.param}.tif"
    shape = (height, width, 3) if samples == 3 else (height, width)
    image = tifffile.memmap(path, shape=shape, dtype=np.uint8, photometric=request.param.replace("gray", "minisblack"),
                            rowsperstrip=height, metadata=None)
    for y in range(0, height, 600):
        band = _pattern(y, y + 600, width, samples)
        image[y : y + 600] = band if samples == 3 else band[:, :, 0]
    image.flush()
    del image
    assert len(tifffile.TiffFile(path).pages[0].dataoffsets) == 1
    return path, samples


def test_a_single_uncompressed_strip_is_read_in_row_bands(one_strip):
    path, samples = one_strip
    strip_bytes = 3600 * 6000 * samples
    with open_slide(path) as slide:
        tile = {}
        peak = _peak_bytes(lambda: tile.setdefault("px", slide.read_region(4000, 3000, 256, 256)))
        expected = _pattern(3000, 3256, 6000, samples)[:, 4000:4256]
        expected = expected if samples == 3 else np.repeat(expected, 3, axis=2)
        assert np.array_equal(tile["px"], expected)
        assert peak < 2 * 256 * 256 * 3 + 2**20 < strip_bytes / 10  # the tile, not the strip
        band = slide.read_region(0, 1000, 6000, 40)
        full = _pattern(1000, 1040, 6000, samples)
        assert np.array_equal(band, full if samples == 3 else np.repeat(full, 3, axis=2))


def test_opening_a_single_uncompressed_strip_decodes_a_band_not_the_strip(one_strip):
    path, samples = one_strip
    opened = []
    peak = _peak_bytes(lambda: opened.append(open_slide(path)))
    try:
        assert peak < 3600 * 6000 * samples / 10
        assert opened[0].downsamples[2] == pytest.approx(4.0)  # overview levels, computed from bands of level 0
        corner = _pattern(0, 200, 6000, samples)[:, :240]
        corner = corner if samples == 3 else np.repeat(corner, 3, axis=2)
        assert np.array_equal(np.asarray(opened[0].levels[2][:50, :60]), halve(halve(corner)))
    finally:
        opened[0].close()


def test_a_short_uncompressed_strip_is_refused_as_truncated(one_strip, tmp_path):
    path, samples = one_strip
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages[0].tags["StripByteCounts"]
        offset, kind = tag.valueoffset, tag.dtype
    count = 3600 * 6000 * samples - 6000 * samples
    data[offset : offset + (4 if kind == 4 else 2)] = count.to_bytes(4 if kind == 4 else 2, "little")
    (tmp_path / "short.tif").write_bytes(bytes(data))
    with pytest.raises(SlideError, match="short.tif is truncated"):
        open_slide(tmp_path / "short.tif")


def test_the_row_band_reader_slices_like_numpy(one_strip):
    path, samples = one_strip
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        shape = page.shape
        reader = UncompressedStrips(path, page, shape)
    full = _pattern(0, 3600, 6000, samples)
    full = full if samples == 3 else full[:, :, 0]
    for key in [(slice(5, 9), slice(5990, None)), (slice(3590, 3700), slice(0, 6000, 1000)), (slice(10, 10), slice(0, 5))]:
        assert np.array_equal(reader[key], full[key]), key
    assert reader.chunks[1] == 6000 and reader.chunks[0] * 6000 * samples <= 4 * 2**20
