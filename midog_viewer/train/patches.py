"""Pixels of labelled images, and the 512 x 512 patches around their labelled objects that training steps on."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from midog_viewer.errors import TrainingError
from midog_viewer.train.sources import LabelledImage


class RegionSource:
    """Reads regions of :class:`LabelledImage` records, keeping a few slides open (lazy, cached)."""

    def __init__(self, max_open: int = 8) -> None:
        self._open: OrderedDict[Path, object] = OrderedDict()
        self._max_open = max_open

    def read(self, image: LabelledImage, x: int, y: int, w: int, h: int) -> np.ndarray:
        """The (h, w, 3) uint8 region at level-0 (x, y); outside the image is white."""
        if image.pixels is not None:
            return _crop_padded(image.pixels, x, y, w, h)
        slide = self._slide(image.path)
        return np.asarray(slide.read_region(x, y, w, h))[..., :3]

    def _slide(self, path: Path | None):
        from midog_viewer.io import open_slide

        if path is None:
            raise TrainingError("an image has neither pixels nor a path.")
        if path not in self._open:
            self._open[path] = open_slide(path)
            while len(self._open) > self._max_open:
                self._open.popitem(last=False)
        self._open.move_to_end(path)
        return self._open[path]

    def __getstate__(self) -> dict:  # DataLoader workers open their own slides
        return {"_open": OrderedDict(), "_max_open": self._max_open}


def _crop_padded(pixels: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
    out = np.full((h, w, 3), 255, dtype=np.uint8)
    height, width = pixels.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if x1 > x0 and y1 > y0:
        out[y0 - y : y1 - y, x0 - x : x1 - x] = pixels[y0:y1, x0:x1, :3]
    return out


class PatchDataset(torch.utils.data.Dataset):
    """Patches around every labelled object; each item is (image [3,H,W] float 0..255, target dict).

    With ``augment`` the patch position is random (the object anywhere inside) and the recipe's
    augmentation applies; otherwise the object sits in the centre. ``random_patches_per_image`` adds that
    many patches per image at positions drawn anywhere in it (with whatever labelled boxes fall inside,
    often none): the seed trained on object patches only, which leaves the model little of the ordinary
    tissue it must stay quiet on; an image with no labelled object (background) always gets at least one.
    Call :meth:`set_epoch` so every epoch draws new, reproducible positions
    and augmentations.
    """

    def __init__(
        self,
        images: Sequence[LabelledImage],
        patch_size: int = 512,
        *,
        augment: Callable | None = None,
        stain: Callable[[LabelledImage, np.ndarray], np.ndarray] | None = None,
        patches_per_object: int = 1,
        random_patches_per_image: int = 0,
        min_visible: float = 0.3,
        seed: int = 0,
    ) -> None:
        self.images = list(images)
        self.patch_size = patch_size
        self.augment = augment
        self.stain = stain
        self.min_visible = min_visible
        self.seed = seed
        self.epoch = 0
        self.source = RegionSource()
        self.index = [
            (i, j) for i, im in enumerate(self.images) for j in range(len(im.boxes)) for _ in range(patches_per_object)
        ]
        # Object index -1: a patch at a random position of the image. An image without any labelled object
        # (background) gets at least one such patch, or it would never be seen.
        self.index += [
            (i, -1)
            for i, im in enumerate(self.images)
            for _ in range(max(random_patches_per_image, 0 if len(im.boxes) else 1))
        ]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image_index, object_index = self.index[item]
        image = self.images[image_index]
        generator = torch.Generator().manual_seed(hash((self.seed, self.epoch, item)) & 0x7FFFFFFF)
        if object_index < 0:
            x, y, w, h = self.random_window(image, generator)
        else:
            x, y, w, h = self.window(image, object_index, generator if self.augment else None)
        pixels = self.source.read(image, x, y, w, h)
        if self.stain is not None:
            pixels = self.stain(image, pixels)
        boxes, labels = boxes_in_window(image.boxes, image.labels, x, y, w, h, self.min_visible)
        tensor = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)
        boxes_t, labels_t = torch.from_numpy(boxes), torch.from_numpy(labels)
        if self.augment is not None:
            tensor, boxes_t, labels_t = self.augment(tensor, boxes_t, labels_t, generator)
        else:
            tensor = tensor.float()
        return tensor, {"boxes": boxes_t.float().reshape(-1, 4), "labels": labels_t.long()}

    def window(self, image: LabelledImage, object_index: int, generator: torch.Generator | None) -> tuple[int, int, int, int]:
        """The patch (x, y, w, h) for one object: random position containing it, or centred on it."""
        x1, y1, x2, y2 = image.boxes[object_index]
        w, h = self._patch_shape(image)
        if generator is None:
            fx = fy = 0.5
        else:
            fx, fy = (float(v) for v in torch.rand(2, generator=generator))
        x = _place(x1, x2, w, image.width, fx)
        y = _place(y1, y2, h, image.height, fy)
        return x, y, w, h


    def _patch_shape(self, image: LabelledImage) -> tuple[int, int]:
        """Patch width and height: the patch size, or the image's side where it is smaller (and known)."""
        w = min(self.patch_size, image.width) if image.width else self.patch_size
        h = min(self.patch_size, image.height) if image.height else self.patch_size
        return w, h

    def random_window(self, image: LabelledImage, generator: torch.Generator) -> tuple[int, int, int, int]:
        """A patch (x, y, w, h) at a uniformly random position inside the image."""
        w, h = self._patch_shape(image)
        fx, fy = (float(v) for v in torch.rand(2, generator=generator))
        x = int(round(fx * max(image.width - w, 0)))
        y = int(round(fy * max(image.height - h, 0)))
        return x, y, w, h


def _place(lo: float, hi: float, size: int, limit: int, fraction: float) -> int:
    """Patch start so that [lo, hi) lies inside [start, start + size), kept inside [0, limit) when possible."""
    first, last = hi - size, lo  # every start in [first, last] contains the object (if it fits)
    if last < first:
        first = last = (lo + hi - size) / 2
    start = int(round(first + fraction * (last - first)))
    if limit:
        start = min(max(start, 0), max(limit - size, 0))
    return start


def boxes_in_window(
    boxes: np.ndarray, labels: np.ndarray, x: int, y: int, w: int, h: int, min_visible: float = 0.3
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (shifted and clipped to the window) that keep at least ``min_visible`` of their area in it."""
    if len(boxes) == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)
    shifted = boxes - np.array([x, y, x, y], dtype=np.float32)
    clipped = shifted.copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(0, w)
    clipped[:, 1::2] = clipped[:, 1::2].clip(0, h)
    area = np.maximum((shifted[:, 2] - shifted[:, 0]) * (shifted[:, 3] - shifted[:, 1]), 1e-6)
    visible = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1]) / area
    keep = visible >= min_visible
    return clipped[keep].astype(np.float32), labels[keep].astype(np.int64)


def collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """Keep images as a list: they may differ in size after multi-scale augmentation."""
    images, targets = zip(*batch)
    return list(images), list(targets)
