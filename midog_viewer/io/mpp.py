"""Pixel size sanity: which µm-per-pixel values in a file's metadata describe a microscope image.

A value that is not a positive finite number ("abc", "-1", "0", "inf", "nan") is a broken tag, not a
broken image: :func:`metadata_number` reads it as unknown and logs one warning line on the
``midog_viewer.io`` logger (printed to stderr by Python's last-resort handler when nothing is configured).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

#: Microscope scans lie far inside this range (0.1–2 µm/px; macro photos of a glass slide ~20–50 µm/px).
#: Values outside it come from screen/print defaults such as 72 or 96 dpi (≈ 350 or 265 µm/px), which
#: image editors write into every PNG, JPEG or TIFF, and mean "unknown", not a pixel size.
MPP_RANGE = (0.01, 100.0)

logger = logging.getLogger("midog_viewer.io")


def plausible_mpp(mpp: float) -> float | None:
    """Return ``mpp`` when it can be a microscope pixel size, else None (unknown)."""
    low, high = MPP_RANGE
    return float(mpp) if low <= mpp <= high else None


def metadata_number(value: object, path: Path, field: str) -> float | None:
    """``value`` (a number or its text) as a positive finite float, or None after one warning line.

    The warning names ``path`` and ``field`` and says the pixel size is read as unknown; callers then turn
    the number into µm per pixel and pass it through :func:`plausible_mpp`, which makes a 72-dpi default
    unknown without a word.
    """
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if math.isfinite(number) and number > 0:
        return number
    logger.warning("%s: its %s %r is not a pixel size; reading it with the pixel size unknown.",
                   path.name, field, str(value).strip()[:40])
    return None
