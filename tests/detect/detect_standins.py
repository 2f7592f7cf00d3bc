"""Stand-ins for the detector tests (a unique module name, so tests import it without packages)."""

from __future__ import annotations

import numpy as np


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

