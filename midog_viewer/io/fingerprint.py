"""A slide's content fingerprint: what identifies a slide when its path, name or modification time change.

A review is linked to its slide by path, size and modification time first; a moved, renamed, copied or
touched file fails that test. The fingerprint is a SHA-256 of what the scan *is*: level-0 size, pixel
size, every level's shape, and the decoded RGB bytes of a few small patches read through our reader
(five 64 × 64 patches of level 0 and one of the file's smallest level). It reads a handful of tiles, so it costs
milliseconds on a real SVS, and it is the same for the same pixels in any file name or folder.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from midog_viewer.errors import SlideError
from midog_viewer.io.levels import DownsampledLevel
from midog_viewer.io.slide import Slide, open_slide

#: Version tag hashed first: a change to what is hashed must change every fingerprint.
FINGERPRINT_VERSION = b"midog-viewer fingerprint 1"
#: Side of each sampled patch (level pixels).
PATCH = 64
#: Where the level-0 patches are centred, as fractions of the width and height.
PLACES = ((0.5, 0.5), (0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75))


def _patch(slide: Slide, level: int, fx: float, fy: float) -> bytes:
    height, width = (int(n) for n in slide.levels[level].shape[:2])
    x = max(0, min(width - PATCH, int(width * fx) - PATCH // 2))
    y = max(0, min(height - PATCH, int(height * fy) - PATCH // 2))
    return np.ascontiguousarray(slide.read_region(x, y, PATCH, PATCH, level)).tobytes()


def slide_fingerprint(slide: Slide) -> str:
    """The hex SHA-256 of an open slide's geometry, pixel size and a few sampled patches."""
    digest = hashlib.sha256(FINGERPRINT_VERSION)
    mpp = "none" if slide.mpp is None else f"{float(slide.mpp):.6g}"
    shapes = ";".join(f"{int(level.shape[1])}x{int(level.shape[0])}" for level in slide.levels)
    digest.update(f"|{slide.width}x{slide.height}|mpp {mpp}|levels {len(slide.levels)}: {shapes}|".encode())
    for fx, fy in PLACES:
        digest.update(_patch(slide, 0, fx, fy))
    stored = [i for i, level in enumerate(slide.levels) if not isinstance(level, DownsampledLevel)]
    if len(stored) > 1:  # the file's own smallest level (our computed ones only repeat level 0's pixels)
        digest.update(_patch(slide, stored[-1], 0.5, 0.5))
    return digest.hexdigest()


def file_fingerprint(path: str | os.PathLike) -> str | None:
    """The fingerprint of the slide file at ``path``, or None when it is no slide our reader opens."""
    try:
        with open_slide(Path(path)) as slide:
            return slide_fingerprint(slide)
    except (SlideError, OSError):
        return None
