"""Tissue detection: glass is left out, tissue (and its edge) kept, and whole-image detection runs tissue tiles only."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from detect_standins import DarkBlobModel, StandInSlide

from midog_viewer.cli import main
from midog_viewer.detect import Detector
from midog_viewer.detect.tiling import plan_tiles
from midog_viewer.detect.tissue import clean_mask, detect_tissue, select_tiles, tissue_filter
from midog_viewer.io import open_slide
from midog_viewer.synthetic import SyntheticHPF, make_hpf, write_hpf_tiff


def _glass_slide(path, width=1400, height=1100, field=(600, 500), at=(100, 100), seed=3):
    """A synthetic H&E field pasted on white glass (with the scanner's faint noise), written as a TIFF."""
    rng = np.random.default_rng(seed)
    canvas = (250 - rng.integers(0, 4, (height, width, 3))).astype(np.uint8)
    hpf = make_hpf(seed=seed, width=field[0], height=field[1])
    canvas[at[1] : at[1] + field[1], at[0] : at[0] + field[0]] = hpf.image
    write_hpf_tiff(SyntheticHPF(canvas, hpf.boxes, hpf.labels), path)
    return path


def _overlaps(tile, box):
    x, y, w, h = tile
    bx, by, bw, bh = box
    return x < bx + bw and bx < x + w and y < by + bh and by < y + h


def test_a_slide_with_glass_has_a_tissue_fraction_below_one_and_fewer_tiles(tmp_path):
    with open_slide(_glass_slide(tmp_path / "glass.tiff")) as slide:
        tissue = detect_tissue(slide)
        tiles = plan_tiles((0, 0, slide.width, slide.height), 512, 64)
        chosen = select_tiles(slide, tiles, tissue=tissue)
    expected = 600 * 500 / (1400 * 1100)
    assert expected * 0.8 < chosen.tissue_fraction < expected * 1.25
    assert 0 < len(chosen.tiles) < len(tiles) == chosen.planned
    # every tile that touches the tissue is kept; the box of the tissue is where it was pasted
    assert [t for t in tiles if _overlaps(t, (100, 100, 600, 500))] == chosen.tiles
    x, y, w, h = tissue.bounding_box()
    assert abs(x - 100) <= 32 and abs(y - 100) <= 32 and abs(w - 600) <= 48 and abs(h - 500) <= 48


def test_a_field_of_tissue_keeps_every_tile(tmp_path):
    path = tmp_path / "field.tiff"
    write_hpf_tiff(make_hpf(seed=1, width=1200, height=900), path)
    with open_slide(path) as slide:
        tiles = plan_tiles((0, 0, slide.width, slide.height), 512, 64)
        chosen = select_tiles(slide, tiles)
    assert chosen.tissue_fraction > 0.9
    assert chosen.tiles == tiles


def test_the_real_svs_loses_its_glass_tiles(shared_data):
    with open_slide(shared_data / "slides" / "CMU-1-Small-Region.svs") as slide:
        tissue = detect_tissue(slide)
        tiles = plan_tiles((0, 0, slide.width, slide.height), 512, 64)
        chosen = select_tiles(slide, tiles, tissue=tissue)
    assert 0.2 < chosen.tissue_fraction < 0.7  # a strip of skin on glass
    assert tissue.scale[0] > 1  # read from a lower pyramid level, not at full resolution
    assert 0 < len(chosen.tiles) < len(tiles)


def test_clean_up_drops_a_speck_bridges_a_gap_and_keeps_tissue_at_the_border():
    mask = np.zeros((40, 40), bool)
    mask[0:20, 0:20] = True  # tissue in the corner, touching two image borders
    mask[10, 0:20] = False  # a one-pixel pale streak through it
    mask[30, 30] = True  # a speck of dust
    cleaned = clean_mask(mask)
    assert cleaned[0:20, 0:20].all()
    assert not cleaned[25:, 25:].any()


def test_a_slide_without_tissue_is_searched_whole():
    blank = StandInSlide(np.full((600, 700, 3), 230, np.uint8))
    blank.levels, blank.downsamples = [blank.pixels], [1.0]
    blank.read_region = lambda x, y, w, h, level=0: blank.pixels[y : y + h, x : x + w]
    tissue = detect_tissue(blank)
    tiles = plan_tiles((0, 0, 700, 600), 512, 64)
    assert tissue.fraction == 0.0 and tissue.bounding_box() is None
    assert tissue_filter(tissue)(tiles) == list(range(len(tiles)))


def test_iter_detect_runs_only_the_tiles_the_filter_keeps(tiny_checkpoint):
    detector = Detector(tiny_checkpoint, device="cpu", score_thr=0.5, stain_normalize=False, batch_size=8)
    detector.model = DarkBlobModel()
    pixels = np.full((900, 960, 3), 255, np.uint8)
    pixels[100:140, 100:140] = 20  # in the first tile only
    slide = StandInSlide(pixels)
    first_only = detector.detect(slide, tile_filter=lambda tiles: [0])
    assert [len(call) for call in detector.model.calls] == [1]
    assert first_only.boxes.tolist() == [[100, 100, 140, 140]]
    assert list(detector.iter_detect(slide, tile_filter=lambda tiles: [])) == []
    detector.model.calls.clear()
    detector.detect(slide, region=(0, 0, 960, 900))  # a region: every tile, no filter
    assert sum(len(call) for call in detector.model.calls) == 4


@pytest.mark.slow
def test_detect_without_region_runs_tissue_tiles_and_records_the_fraction(tiny_checkpoint, tmp_path, capsys):
    slide = _glass_slide(tmp_path / "glass.tiff")
    out = tmp_path / "dets.json"
    args = ["detect", str(slide), "--model", str(tiny_checkpoint), "--device", "cpu", "--no-stain", "--out", str(out)]
    assert main(args) == 0
    err = capsys.readouterr().err
    done, total = map(int, re.findall(r"(\d+)/(\d+) tiles", err)[-1])
    assert done == total < 9  # 1400 x 1100 px plans 3 x 3 tiles; the glass at the right and bottom is left out
    assert 0 < json.loads(out.read_text())["tissue_fraction"] < 1
    assert "tissue: " in err
    assert main(args[:-2] + ["--region", "0,0,1400,1100", "--out", str(out)]) == 0
    assert "9/9 tiles" in capsys.readouterr().err  # the region path is unchanged: every tile
    assert json.loads(out.read_text())["tissue_fraction"] is None
