"""Crops mosaicked into fields: every crop once per epoch, boxes that follow each crop's turn, exact areas."""

from __future__ import annotations

import numpy as np
import pytest

from midog_viewer.train.sources import LabelledImage
from midog_viewer.train.mosaic import MosaicDataset, _turn, validation_mosaics


def _crop(key: str, cell: int = 128, source: str = "A", mpp: float = 0.25, box=(40, 30, 90, 80)) -> LabelledImage:
    pixels = np.full((cell, cell, 3), 200, np.uint8)
    x1, y1, x2, y2 = box
    pixels[y1:y2, x1:x2] = 20  # the "figure": dark where its box is
    return LabelledImage(key, np.array([box], np.float32), np.array([0]), cell, cell, mpp, pixels=pixels, source=source)


@pytest.mark.parametrize(("k", "flip"), [(0, False), (1, False), (2, True), (3, True), (1, True)])
def test_a_turned_crop_keeps_its_box_on_its_figure(k, flip):
    crop = _crop("a")
    pixels, boxes = _turn(crop.pixels, crop.boxes, k, flip)
    x1, y1, x2, y2 = boxes[0].astype(int)
    assert (pixels[y1:y2, x1:x2] == 20).all() and (pixels == 20).sum() == 50 * 50 * 3


def test_training_mosaics_hold_every_crop_once_per_epoch_and_reshuffle():
    crops = [_crop(f"c{i}") for i in range(20)] + [_crop(f"s{i}", cell=50, box=(10, 10, 40, 40)) for i in range(5)]
    dataset = MosaicDataset(crops, 512, seed=1)
    assert len(dataset) == 2 + 1  # 16 + 4 crops of 128 px, 5 of 50 px
    placed = sorted(i for _, chunk, _ in dataset.plan for i in chunk)
    assert placed == list(range(25))
    full = next(i for i, (cell, chunk, _) in enumerate(dataset.plan) if cell == 128 and len(chunk) == 16)
    image, target = dataset[full]
    assert tuple(image.shape) == (3, 512, 512) and len(target["boxes"]) == 16
    for box in target["boxes"].numpy().astype(int):  # each box still covers its dark figure
        assert float(image[:, box[1]:box[3], box[0]:box[2]].mean()) == pytest.approx(20)
    first = [chunk for _, chunk, _ in dataset.plan]
    dataset.set_epoch(1)
    assert [chunk for _, chunk, _ in dataset.plan] != first
    dataset.set_epoch(0)
    assert [chunk for _, chunk, _ in dataset.plan] == first


def test_a_repeated_source_appears_that_many_times_per_epoch_in_different_mosaics():
    crops = [_crop(f"a{i}", source="A") for i in range(40)] + [_crop(f"b{i}", source="B") for i in range(4)]
    dataset = MosaicDataset(crops, 512, seed=3, repeats={"B": 3})
    for epoch in range(3):
        dataset.set_epoch(epoch)
        homes: dict[int, list[int]] = {}
        for mosaic, (_, chunk, _) in enumerate(dataset.plan):
            for index in chunk:
                homes.setdefault(index, []).append(mosaic)
        assert sorted(homes) == list(range(44))
        assert all(len(homes[i]) == 1 for i in range(40))  # an unrepeated source: once, as before
        assert all(len(homes[i]) == 3 for i in range(40, 44))
        assert sum(len(set(homes[i])) for i in range(40, 44)) >= 10  # copies spread over mosaics, not stacked
    assert len(dataset) == -(-(40 + 12) // 16)


def test_validation_mosaics_keep_sources_apart_and_only_full_rows():
    crops = [_crop(f"a{i}", source="A") for i in range(18)] + [_crop(f"b{i}", source="B", mpp=0.23) for i in range(4)]
    mosaics = validation_mosaics(crops, 512)
    assert [(m.source, m.width, m.height, len(m.boxes)) for m in mosaics] == [
        ("A", 512, 512, 16), ("A", 512, 128, 2), ("B", 512, 128, 4)
    ]  # every crop is validated on; a part-empty row's white is not counted as tissue
    assert [m.tissue_px for m in mosaics] == [16 * 128 * 128, 2 * 128 * 128, 4 * 128 * 128]
    assert mosaics[2].mpp == 0.23 and (mosaics[0].pixels[mosaics[0].boxes[3, 1].astype(int) + 5] == 20).any()


def test_training_boxes_stop_at_their_crop_and_never_cover_the_neighbour():
    edge = _crop("edge", box=(-10, 40, 30, 80))  # a figure cut by its crop's left edge
    dataset = MosaicDataset([_crop("left")] + [edge], 512, seed=0)
    for epoch in range(4):
        dataset.set_epoch(epoch)
        _, target = dataset[0]
        boxes = target["boxes"].numpy()
        assert (boxes >= 0).all() and (boxes <= 256).all()
        widths = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        assert sorted(np.round(widths).tolist()) == [30.0, 40.0] or sorted(np.round(widths).tolist()) == [30, 50]


def test_mosaics_need_crops_in_memory():
    crop = _crop("a")
    crop.pixels = None
    with pytest.raises(ValueError, match="in memory"):
        MosaicDataset([crop])
