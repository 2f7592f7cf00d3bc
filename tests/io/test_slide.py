"""open_slide on every layout: format, mpp, tile size, levels and pixels."""

from __future__ import annotations

import numpy as np
import pytest

from midog_viewer.errors import SlideError
from midog_viewer.io import FORMATS, Slide, open_slide

# name → (format, mpp, tile, level widths)
EXPECTED = {
    "ome": ("ome-tiff", 0.5, (128, 128), [800, 400, 200]),
    "pages": ("pyramidal-tiff", None, (64, 64), [800, 400, 200]),
    "svs": ("aperio-svs", 0.25, (256, 256), [800]),
    "strip": ("tiff", 0.23, None, [800]),
    "tiled": ("tiff", None, (128, 128), [800]),
    "rgba": ("tiff", None, None, [800]),
    "planar": ("tiff", None, None, [800]),
    "gray": ("tiff", None, None, [800]),
    "png": ("png", 0.25, None, [800]),
    "png_rgba": ("png", None, None, [800]),
    "jpeg": ("jpeg", None, None, [800]),
    "single_plane_stack": ("tiff", None, (64, 64), [800]),  # axes QYXS with Q = 1, RGBA
    "ndpi": ("hamamatsu-ndpi", 0.23, None, [800, 400, 200]),
}
LOSSLESS = ("ome", "pages", "strip", "tiled", "rgba", "planar", "png", "png_rgba", "single_plane_stack", "ndpi")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_metadata_of_each_layout(layouts, name):
    fmt, mpp, tile, widths = EXPECTED[name]
    with open_slide(layouts[name]) as slide:
        assert isinstance(slide, Slide)
        assert slide.format == fmt and fmt in FORMATS
        assert slide.mpp == (pytest.approx(mpp, rel=1e-4) if mpp else None)
        assert slide.tile_size == tile
        assert (slide.width, slide.height) == (800, 600)
        assert [level.shape[1] for level in slide.levels] == widths
        assert slide.downsamples[0] == 1.0
        assert slide.downsamples == sorted(slide.downsamples)
        for level in slide.levels:
            assert level.ndim == 3 and level.shape[2] == 3 and level.dtype == np.uint8


@pytest.mark.parametrize("name", LOSSLESS)
def test_level0_pixels_match_the_source(layouts, pixels, name):
    with open_slide(layouts[name]) as slide:
        assert np.array_equal(np.asarray(slide.levels[0][100:180, 300:420]), pixels[100:180, 300:420])
        assert np.array_equal(slide.read_region(300, 100, 120, 80), pixels[100:180, 300:420])


def test_jpeg_pixels_are_close(layouts, pixels):
    with open_slide(layouts["jpeg"]) as slide:
        diff = np.abs(slide.read_region(0, 0, 800, 600).astype(int) - pixels.astype(int))
        assert diff.mean() < 6


def test_grayscale_becomes_gray_rgb(layouts, pixels):
    with open_slide(layouts["gray"]) as slide:
        region = slide.read_region(10, 20, 30, 40)
        for channel in range(3):
            assert np.array_equal(region[:, :, channel], pixels[20:60, 10:40, 1])


def test_read_region_is_white_outside_the_slide(layouts, pixels):
    with open_slide(layouts["tiled"]) as slide:
        region = slide.read_region(-20, 590, 60, 30)
        assert region.shape == (30, 60, 3) and region.dtype == np.uint8
        assert (region[:, :20] == 255).all() and (region[10:] == 255).all()
        assert np.array_equal(region[:10, 20:], pixels[590:600, 0:40])
        assert (slide.read_region(5000, 5000, 8, 8) == 255).all()
        assert slide.read_region(0, 0, 0, 5).shape == (5, 0, 3)


def test_read_region_at_a_lower_level(layouts, pixels):
    with open_slide(layouts["ome"]) as slide:
        assert np.array_equal(slide.read_region(50, 25, 40, 30, level=1), pixels[::2, ::2][25:55, 50:90])


def test_read_region_rejects_bad_requests(layouts):
    with open_slide(layouts["ome"]) as slide:
        with pytest.raises(SlideError, match="not level 3"):
            slide.read_region(0, 0, 10, 10, level=3)
        with pytest.raises(SlideError, match="width and height"):
            slide.read_region(0, 0, -1, 10)


def test_overview_levels_of_a_plain_image_average_level0(tmp_path, pixels):
    """A non-pyramidal image larger than 2048 px gets 2× area-averaged levels (here forced by a big PNG)."""
    from PIL import Image

    big = np.tile(pixels, (1, 3, 1))  # 600 × 2400: one overview level
    path = tmp_path / "wide.png"
    Image.fromarray(big).save(path, compress_level=1)
    with open_slide(path) as slide:
        assert [level.shape[:2] for level in slide.levels] == [(600, 2400), (300, 1200)]
        expected = big[:8, :8].reshape(4, 2, 4, 2, 3).mean(axis=(1, 3))
        assert np.abs(slide.levels[1][:4, :4].astype(float) - expected).max() <= 0.5
        assert slide.downsamples == [1.0, 2.0]


def test_close_is_idempotent_and_repr_names_the_file(layouts):
    slide = open_slide(str(layouts["ome"]))
    assert "pyramid.ome.tif" in repr(slide) and "ome-tiff" in repr(slide)
    slide.close()
    slide.close()


def test_a_72_dpi_tag_means_unknown_pixel_size(tmp_path, pixels, strip_tiff_writer):
    with open_slide(strip_tiff_writer(tmp_path / "screen.tif", pixels, dpi=72)) as slide:
        assert slide.mpp is None
