"""The real files in ../shared/data: the Aperio SVS, its DICOM twin and a 4-level tiled TIFF pyramid."""

from __future__ import annotations

import numpy as np
import pytest

from midog_viewer.io import open_slide


def test_aperio_svs(shared_data):
    with open_slide(shared_data / "slides" / "CMU-1-Small-Region.svs") as slide:
        assert slide.format == "aperio-svs"
        assert (slide.width, slide.height) == (2220, 2967)
        assert slide.mpp == pytest.approx(0.499)
        assert slide.tile_size == (240, 240)
        assert [lv.shape for lv in slide.levels] == [(2967, 2220, 3), (1484, 1110, 3)]
        region = slide.read_region(1000, 1400, 300, 200)
        assert region.shape == (200, 300, 3) and region.dtype == np.uint8
        assert region.std() > 10  # tissue, not blank


def test_dicom_twin_matches_the_svs(shared_data):
    folder = shared_data / "slides" / "CMU-1-Small-Region-dicom"
    with open_slide(shared_data / "slides" / "CMU-1-Small-Region.svs") as svs:
        reference = svs.read_region(1000, 1400, 240, 240).astype(int)
    for path in (folder, sorted(folder.glob("*.dcm"))[0]):
        with open_slide(path) as slide:
            assert slide.format == "dicom"
            assert (slide.width, slide.height) == (2220, 2967)
            assert slide.mpp == pytest.approx(0.499)
            assert slide.tile_size == (240, 240)
            assert len(slide.levels) == 2
            region = slide.read_region(1000, 1400, 240, 240).astype(int)
            assert np.abs(region - reference).mean() < 8  # same tiles, decoded by another JPEG codec


def test_tiled_tiff_pyramid(shared_data):
    with open_slide(shared_data / "slides" / "small_HE_levels.tiff") as slide:
        assert slide.format == "pyramidal-tiff"
        assert slide.tile_size == (64, 64)
        assert [lv.shape[:2] for lv in slide.levels] == [(250, 300), (125, 150), (62, 75), (31, 37)]
        assert slide.downsamples[1] == pytest.approx(2.0)
