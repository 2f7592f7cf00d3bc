"""DICOM whole-slide images (a folder of VOLUME/LABEL/OVERVIEW instances) through wsidicom.

Each pyramid level reads regions through ``WsiDicom.read_region``, which decodes only the frames a
region touches. A single ``.dcm`` file stands for the slide in its folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from midog_viewer.errors import SlideError
from midog_viewer.io.levels import RegionLevel, add_overview_levels
from midog_viewer.io.mpp import plausible_mpp


@dataclass
class DicomParts:
    """What :func:`open_dicom` found: the pieces a :class:`~midog_viewer.io.Slide` is made of."""

    levels: list[Any]
    mpp: float | None
    tile_size: tuple[int, int] | None
    handle: Any


def _reader(wsi: Any, level: int):
    def read_box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        region = wsi.read_region((x0, y0), level, (x1 - x0, y1 - y0), as_array=True)
        return np.ascontiguousarray(np.asarray(region)[:, :, :3], dtype=np.uint8)

    return read_box


def open_dicom(path: Path) -> DicomParts:
    """Open the DICOM WSI in folder ``path`` (or the folder of file ``path``) lazily."""
    from wsidicom import WsiDicom  # imported here: pydicom and friends cost half a second

    folder = path if path.is_dir() else path.parent
    try:
        wsi = WsiDicom.open(folder)
    except Exception as exc:  # wsidicom raises WsiDicomNotFoundError, pydicom errors, ValueError...
        raise SlideError(f"{path.name} is not a readable DICOM whole-slide image ({exc}).") from exc
    try:
        levels = [RegionLevel(lv.size.height, lv.size.width, _reader(wsi, lv.level)) for lv in wsi.levels]
        levels[0][0:1, 0:1]  # decode one frame now, so damaged data fails here and not in the viewer
    except Exception as exc:
        wsi.close()
        raise SlideError(f"{path.name} is a damaged DICOM whole-slide image ({exc}).") from exc
    if len(levels) == 1:
        levels = add_overview_levels(levels)
    mpp = plausible_mpp(float(wsi.levels.base_level.mpp.width)) if wsi.levels.base_level.mpp else None
    tile = (int(wsi.tile_size.width), int(wsi.tile_size.height))
    return DicomParts(levels, mpp, tile, wsi)
