"""An untiled MIDOG-sized (7215 × 5412) TIFF opens lazily: overview levels, reads touch only what they need."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import tifffile

from midog_viewer.io import open_slide

WIDTH, HEIGHT, ROWS_PER_STRIP = 7215, 5412, 64


def _rows(y0: int, y1: int) -> np.ndarray:
    """The test image's rows y0..y1: a pattern whose every pixel is known without storing the image."""
    yy = np.arange(y0, y1, dtype=np.int32)[:, None, None]
    xx = np.arange(WIDTH, dtype=np.int32)[None, :, None]
    channel = np.arange(3, dtype=np.int32)[None, None, :]
    return ((yy // 7 + xx // 5 + 40 * channel) % 256).astype(np.uint8)


@pytest.fixture(scope="module")
def midog_tiff(tmp_path_factory):
    path = tmp_path_factory.mktemp("midog") / "001.tiff"
    strips = (_rows(y, min(y + ROWS_PER_STRIP, HEIGHT)) for y in range(0, HEIGHT, ROWS_PER_STRIP))
    tifffile.imwrite(
        path, strips, shape=(HEIGHT, WIDTH, 3), dtype=np.uint8, photometric="rgb", rowsperstrip=ROWS_PER_STRIP,
        resolution=(1e4 / 0.23, 1e4 / 0.23), resolutionunit="CENTIMETER", metadata=None,
    )
    return path


def _peak_bytes(read) -> int:
    tracemalloc.start()
    try:
        read()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_levels_and_metadata(midog_tiff):
    with open_slide(midog_tiff) as slide:
        assert slide.format == "tiff" and slide.tile_size is None
        assert slide.mpp == pytest.approx(0.23)
        assert [lv.shape for lv in slide.levels] == [(5412, 7215, 3), (2706, 3608, 3), (1353, 1804, 3)]
        assert slide.downsamples[2] == pytest.approx(4.0, rel=1e-3)


def test_reading_a_field_touches_only_its_strips(midog_tiff):
    image_bytes = WIDTH * HEIGHT * 3
    with open_slide(midog_tiff) as slide:
        region = {}
        peak = _peak_bytes(lambda: region.setdefault("px", slide.read_region(3000, 2500, 256, 256)))
        assert np.array_equal(region["px"], _rows(2500, 2756)[:, 3000:3256])
        first, last = 2500 // ROWS_PER_STRIP, (2756 - 1) // ROWS_PER_STRIP
        touched_strips = (last - first + 1) * ROWS_PER_STRIP * WIDTH * 3
        assert peak < 1.5 * touched_strips < 0.1 * image_bytes  # the 5 strips it needs, not the 117 MB image


def test_overview_pixels_are_computed_lazily_from_level0(midog_tiff):
    image_bytes = WIDTH * HEIGHT * 3
    with open_slide(midog_tiff) as slide:
        out = {}
        peak = _peak_bytes(lambda: out.setdefault("px", np.asarray(slide.levels[2][600:640, 900:950])))
        expected = _rows(2400, 2560)[:, 3600:3800].astype(float).reshape(40, 4, 50, 4, 3).mean(axis=(1, 3))
        assert np.abs(out["px"] - expected).max() <= 1.0  # two rounded 2× averages
        # One level-2 block needs 1024 level-0 rows; strips are full-width, so ~19 % of the image passes
        # through (one strip band at a time), never the whole of it.
        assert peak < 0.25 * image_bytes
