"""Pixel size sanity: which µm-per-pixel values in a file's metadata describe a microscope image."""

from __future__ import annotations

#: Microscope scans lie far inside this range (0.1–2 µm/px; macro photos of a glass slide ~20–50 µm/px).
#: Values outside it come from screen/print defaults such as 72 or 96 dpi (≈ 350 or 265 µm/px), which
#: image editors write into every PNG, JPEG or TIFF, and mean "unknown", not a pixel size.
MPP_RANGE = (0.01, 100.0)


def plausible_mpp(mpp: float) -> float | None:
    """Return ``mpp`` when it can be a microscope pixel size, else None (unknown)."""
    low, high = MPP_RANGE
    return float(mpp) if low <= mpp <= high else None
