"""The lazy level array-likes: numpy-style indexing, 2× averaging, bounded cache, RGB adaptation."""

from __future__ import annotations

import numpy as np
import pytest

from midog_viewer.io.levels import (
    BLOCK,
    DownsampledLevel,
    RegionLevel,
    RGBAdapter,
    StripView,
    add_overview_levels,
    halve,
)


class CountingArray:
    """An (H, W, 3) array that records every region read from it (optionally announcing its chunks)."""

    def __init__(self, data: np.ndarray, chunks: tuple[int, int, int] | None = None) -> None:
        self.data, self.shape, self.reads = data, data.shape, []
        if chunks:
            self.chunks = chunks

    def __getitem__(self, key):
        self.reads.append(key)
        return self.data[key]


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (1501, 2301, 3), dtype=np.uint8)


def test_indexing_matches_numpy(image):
    level = RegionLevel(image.shape[0], image.shape[1], lambda y0, y1, x0, x1: image[y0:y1, x0:x1])
    keys = [
        (slice(10, 50), slice(20, 90)),
        (slice(None), slice(0, 5), 1),
        (7, slice(3, 9)),
        (slice(0, 100, 7), slice(5, 80, 3), slice(None)),
        (Ellipsis, 2),
        (-1, -1),
        (slice(1400, 2000), slice(2290, 9999)),
        (slice(50, 10), slice(0, 4)),
    ]
    for key in keys:
        assert np.array_equal(level[key], image[key]), key
    assert np.array_equal(np.asarray(level), image)
    assert level.size == image.size and len(level) == image.shape[0]


def test_bad_indices_raise_index_error(image):
    level = RegionLevel(10, 10, lambda *box: np.zeros((1, 1, 3), np.uint8))
    for key in [(10, 0), (slice(0, 5, -1),), (0, 0, 0, 0), ([1, 2],)]:
        with pytest.raises(IndexError):
            level[key]


@pytest.mark.parametrize("height, width", [(4, 6), (5, 7), (1, 1), (1, 4), (3, 1), (6, 9)])
def test_halve_rounds_the_mean_and_repeats_an_odd_edge(height, width):
    src = np.random.default_rng(height * 10 + width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    padded = np.pad(src, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge").astype(np.int64)
    sums = padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2, 3).sum(axis=(1, 3))
    assert np.array_equal(halve(src), (sums + 2) // 4)


def test_downsampled_level_is_a_2x_area_mean(image):
    level = DownsampledLevel(image)
    assert level.shape == (751, 1151, 3)
    padded = np.pad(image, ((0, 1), (0, 1), (0, 0)), mode="edge").astype(np.float64)
    expected = padded.reshape(751, 2, 1151, 2, 3).mean(axis=(1, 3))
    assert np.abs(level[:, :].astype(float) - expected).max() <= 0.5
    assert np.array_equal(level[700:751, 1100:1151], level[:, :][700:751, 1100:1151])


def test_downsampled_level_reads_only_the_blocks_it_needs(image):
    source = CountingArray(image)
    level = DownsampledLevel(source)
    level[10:20, 10:20]
    assert source.reads == [(slice(0, 2 * BLOCK), slice(0, 2 * BLOCK))]
    level[30:40, 30:40]  # same block: served from the cache
    assert len(source.reads) == 1


def test_over_strips_each_source_row_is_read_once(image):
    """Full-width strips (16 rows): blocks are full-width bands, so no strip is decoded twice."""
    source = CountingArray(image, chunks=(16, image.shape[1], 3))
    level = DownsampledLevel(source)
    assert level.read_chunks[1] == level.shape[1] and level.read_chunks[0] % 8 == 0
    assert level.chunks == (level.read_chunks[0], BLOCK, 3)  # napari widens views to these: not full width
    whole = level[:, :]
    rows = [key[0] for key in source.reads]
    assert all(key[1] == slice(0, image.shape[1]) for key in source.reads)
    assert [r.start for r in rows] == sorted(r.start for r in rows)
    assert all(a.stop == b.start for a, b in zip(rows, rows[1:])) and rows[-1].stop == image.shape[0]
    assert all(r.start % 16 == 0 for r in rows)
    assert np.array_equal(whole, DownsampledLevel(image)[:, :])


def test_strip_view_passes_pixels_and_narrows_chunks_for_napari(image):
    source = CountingArray(image, chunks=(16, image.shape[1], 3))
    view = StripView(source)
    assert view.read_chunks == (16, image.shape[1], 3) and view.chunks == (16, BLOCK, 3)
    assert np.array_equal(view[100:150, 2000:2301], image[100:150, 2000:2301])
    assert source.reads == [(slice(100, 150), slice(2000, 2301))]
    assert DownsampledLevel(view).read_chunks[1] == DownsampledLevel(source).read_chunks[1]  # still band mode


def test_over_tiles_blocks_align_to_them(image):
    source = CountingArray(image, chunks=(240, 240, 3))
    level = DownsampledLevel(source)
    assert level.chunks == (480, 480, 3)  # 960 source pixels: four 240-px tiles, none split
    level[:, :]
    assert all(key[0].start % 240 == 0 and key[1].start % 240 == 0 for key in source.reads)


def test_downsampled_cache_is_bounded(image):
    source = CountingArray(image)
    one_block = BLOCK * BLOCK * 3
    level = DownsampledLevel(source, cache_bytes=2 * one_block)
    level[:, :]  # 2 × 3 blocks
    assert level._cached <= 2 * one_block
    reads = len(source.reads)
    level[700:751, 1100:1151]  # the last block computed is still cached
    assert len(source.reads) == reads
    level[0:5, 0:5]  # the first one was evicted
    assert len(source.reads) == reads + 1


def test_overview_levels_stop_at_2048_px():
    levels = add_overview_levels([np.zeros((5412, 7215, 3), np.uint8)])
    assert [lv.shape[:2] for lv in levels] == [(5412, 7215), (2706, 3608), (1353, 1804)]
    assert len(add_overview_levels([np.zeros((100, 2048, 3), np.uint8)])) == 1


@pytest.mark.parametrize(
    "axes, make",
    [
        ("YXS", lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 9, np.uint8)])),
        ("SYX", lambda rgb: np.moveaxis(rgb, 2, 0)),
        ("CYX", lambda rgb: np.moveaxis(np.dstack([rgb, rgb[:, :, :1]]), 2, 0)),
    ],
)
def test_rgb_adapter_drops_alpha_and_reorders_planes(image, axes, make):
    rgb = image[:40, :50]
    adapter = RGBAdapter(make(rgb), axes)
    assert adapter.shape == (40, 50, 3)
    assert np.array_equal(adapter[5:25, 7:33], rgb[5:25, 7:33])


def test_rgb_adapter_spreads_gray(image):
    gray = image[:40, :50, 0]
    for source, axes in [(gray, "YX"), (gray[:, :, None], "YXS"), (gray[None], "SYX")]:
        out = RGBAdapter(source, axes)[:, :]
        assert all(np.array_equal(out[:, :, c], gray) for c in range(3))
