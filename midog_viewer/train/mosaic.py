"""Crops mosaicked into fields, for training and validating on crop data sets.

A crop centred on a mitosis teaches a detector that a figure sits mid-image with the image's border
beside it; on a real 512 px tile neither holds. Placed side by side into a field of about 512 px, crops
show the model many nuclei per mitosis and no border next to each figure, and validation sees what a
user's field looks like (the held-out crop target is scored on such 4 × 4 mosaics too).

Crops of one cell size share a mosaic (``grid = side // cell``). Training mosaics are drawn anew each
epoch (seeded), each crop turned by a random multiple of 90° and flipped (a mitosis has no orientation);
validation mosaics are fixed, one source and pixel spacing each, and know their crops' area.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from midog_viewer.train.sources import LabelledImage

#: Side of a mosaic field in px (a detector tile).
MOSAIC_SIDE = 512


def _cell(image: LabelledImage) -> int:
    return int(max(image.width, image.height))


def _groups(images: Sequence[LabelledImage], key: Callable[[LabelledImage], tuple]) -> dict[tuple, list[int]]:
    groups: dict[tuple, list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(key(image), []).append(i)
    return groups


def _place(
    images: Sequence[LabelledImage],
    members: Sequence[int],
    cell: int,
    grid: int,
    turns: Sequence[tuple[int, bool]],
    clip: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paste ``members`` row by row into a white canvas of ``grid`` columns; boxes follow each crop's turn.

    With ``clip`` (training) a box near a crop's edge is cut at the crop, so it never covers the neighbour's
    tissue; validation matches by centre and keeps boxes whole.
    """
    rows = -(-len(members) // grid)
    canvas = np.full((rows * cell, grid * cell, 3), 255, np.uint8)
    boxes, labels = [], []
    for slot, (index, (k, flip)) in enumerate(zip(members, turns)):
        image = images[index]
        pixels, crop_boxes = _turn(image.pixels, image.boxes, k, flip)
        oy, ox = (slot // grid) * cell, (slot % grid) * cell
        h, w = pixels.shape[:2]
        dy, dx = (cell - h) // 2, (cell - w) // 2
        canvas[oy + dy : oy + dy + h, ox + dx : ox + dx + w] = pixels
        if len(crop_boxes):
            if clip:
                crop_boxes = crop_boxes.copy()
                crop_boxes[:, 0::2] = crop_boxes[:, 0::2].clip(0, w)
                crop_boxes[:, 1::2] = crop_boxes[:, 1::2].clip(0, h)
            boxes.append(crop_boxes + np.array([ox + dx, oy + dy] * 2, np.float32))
            labels.append(image.labels)
    if boxes:
        return canvas, np.concatenate(boxes).astype(np.float32), np.concatenate(labels).astype(np.int64)
    return canvas, np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)


def _turn(pixels: np.ndarray, boxes: np.ndarray, k: int, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """``pixels`` turned k × 90° counter-clockwise then mirrored left-right if ``flip``; boxes alike."""
    boxes = boxes.astype(np.float32).copy()
    for _ in range(k % 4):
        h, w = pixels.shape[:2]
        pixels = np.rot90(pixels)
        # counter-clockwise: (x, y) -> (y, w - x)
        boxes = np.stack([boxes[:, 1], w - boxes[:, 2], boxes[:, 3], w - boxes[:, 0]], axis=1) if len(boxes) else boxes
    if flip:
        w = pixels.shape[1]
        pixels = pixels[:, ::-1]
        boxes = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], axis=1) if len(boxes) else boxes
    return np.ascontiguousarray(pixels), boxes.reshape(-1, 4)


def validation_mosaics(images: Sequence[LabelledImage], side: int = MOSAIC_SIDE) -> list[LabelledImage]:
    """Fixed mosaics of validation crops, one source, cell size and spacing each; every crop is in one.

    ``area_px`` of a mosaic is its crops' area, not the white of a last row left part-empty.
    """
    mosaics = []
    for (source, cell, mpp), members in sorted(_groups(images, lambda im: (im.source, _cell(im), im.mpp)).items()):
        grid = max(1, side // cell)
        for start in range(0, len(members), grid * grid):
            chunk = members[start : start + grid * grid]
            pixels, boxes, labels = _place(images, chunk, cell, grid, [(0, False)] * len(chunk))
            mosaics.append(
                LabelledImage(
                    f"mosaic:{source}:{cell}:{start}", boxes, labels, pixels.shape[1], pixels.shape[0], mpp,
                    pixels=pixels, source=source, area_px=sum(images[i].width * images[i].height for i in chunk),
                )
            )
    return mosaics


class MosaicDataset(torch.utils.data.Dataset):
    """Training mosaics of crops (same contract as :class:`~midog_viewer.train.patches.PatchDataset`).

    Every crop appears in exactly one mosaic per epoch (a crop of a source in ``repeats`` that many times,
    in different mosaics where it can); :meth:`set_epoch` reshuffles which, and each crop's turn,
    reproducibly from the seed. ``stain`` (per crop) and ``augment`` (per mosaic) follow the recipe as for
    patches.
    """

    def __init__(
        self,
        images: Sequence[LabelledImage],
        side: int = MOSAIC_SIDE,
        *,
        augment: Callable | None = None,
        stain: Callable[[LabelledImage, np.ndarray], np.ndarray] | None = None,
        seed: int = 0,
        repeats: Mapping[str, int] | None = None,
    ) -> None:
        self.images = list(images)
        missing = [im.key for im in self.images if im.pixels is None]
        if missing:
            raise ValueError(f"mosaics need images held in memory; {missing[0]} is not")
        self.side, self.augment, self.stain, self.seed = side, augment, stain, seed
        self.by_cell = _groups(self.images, lambda im: (_cell(im),))
        self.repeats = dict(repeats or {})
        self.epoch = 0
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        rng = random.Random(self.seed * 1_000_003 + epoch)
        self.plan: list[tuple[int, list[int], list[tuple[int, bool]]]] = []
        for (cell,), members in sorted(self.by_cell.items()):
            grid = max(1, self.side // cell)
            order = []
            for round_ in range(max([1, *self.repeats.values()])):  # round by round: copies in different mosaics
                batch = [i for i in members if self.repeats.get(self.images[i].source, 1) > round_]
                rng.shuffle(batch)
                order += batch
            for start in range(0, len(order), grid * grid):
                chunk = order[start : start + grid * grid]
                turns = [(rng.randrange(4), rng.random() < 0.5) for _ in chunk]
                self.plan.append((cell, chunk, turns))

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cell, chunk, turns = self.plan[item]
        grid = max(1, self.side // cell)
        if self.stain is not None:
            crops = [LabelledImage(im.key, im.boxes, im.labels, im.width, im.height, im.mpp,
                                   pixels=self.stain(im, im.pixels)) for im in (self.images[i] for i in chunk)]
            pixels, boxes, labels = _place(crops, range(len(crops)), cell, grid, turns, clip=True)
        else:
            pixels, boxes, labels = _place(self.images, chunk, cell, grid, turns, clip=True)
        tensor = torch.from_numpy(pixels).permute(2, 0, 1)
        boxes_t, labels_t = torch.from_numpy(boxes), torch.from_numpy(labels)
        if self.augment is not None:
            generator = torch.Generator().manual_seed(hash((self.seed, self.epoch, item)) & 0x7FFFFFFF)
            tensor, boxes_t, labels_t = self.augment(tensor, boxes_t, labels_t, generator)
        else:
            tensor = tensor.float()
        return tensor, {"boxes": boxes_t.float().reshape(-1, 4), "labels": labels_t.long()}
