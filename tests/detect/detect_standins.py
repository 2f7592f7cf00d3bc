"""Stand-ins for the detector tests (a unique module name, so tests import it without packages)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class StandInSlide:
    """Exactly the members the detector uses of ``midog_viewer.io.Slide``: width, height, mpp, read_region."""

    def __init__(self, pixels, mpp: float | None = 0.25) -> None:
        self.pixels = np.asarray(pixels)
        self.height, self.width = self.pixels.shape[:2]
        self.mpp = mpp

    def read_region(self, x: int, y: int, w: int, h: int):
        out = np.full((h, w) + self.pixels.shape[2:], 255, self.pixels.dtype)
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, self.width), min(y + h, self.height)
        if x1 > x0 and y1 > y0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = self.pixels[y0:y1, x0:x1]
        return out


class DarkBlobModel(nn.Module):
    """Stands in for the network: reports the bounding box of the dark pixels of each tile it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[tuple[int, int]]] = []

    def forward(self, images):
        self.calls.append([tuple(im.shape[1:]) for im in images])
        outputs = []
        for image in images:
            ys, xs = torch.nonzero(image.mean(0) < 60, as_tuple=True)
            if ys.numel():
                box = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()[None]
                outputs.append({"boxes": box, "scores": torch.tensor([0.9]), "labels": torch.tensor([0])})
            else:
                outputs.append({"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)})
        return outputs
