"""TIFF-family slides through tifffile: Aperio SVS, Hamamatsu NDPI, OME-TIFF, pyramidal and plain TIFF.

Each pyramid level of the first image series becomes a read-only zarr array over tifffile's store, so
slicing decodes only the tiles (or strips) it touches. Images without a pyramid get lazy 2× overview
levels (:func:`~midog_viewer.io.levels.add_overview_levels`). Only 8-bit images are read: RGB as is,
RGBA without its alpha, grayscale as gray RGB; 16-bit or float images (fluorescence, masks) and stacks
with more than one plane are refused with a :class:`~midog_viewer.errors.SlideError`, because the
review tools expect brightfield H&E.

No read decodes more than a bounded number of bytes (:mod:`~midog_viewer.io.strips`): large uncompressed
strips are read in row bands, files whose compressed tiles or strips would decode past the bound are
refused before any pixel is decoded. A broken pixel-size tag leaves the pixel size unknown (one
warning), not the image unreadable.
"""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr

from midog_viewer.errors import SlideError
from midog_viewer.io.levels import RGBAdapter, StripView, add_overview_levels
from midog_viewer.io.mpp import metadata_number, plausible_mpp
from midog_viewer.io.strips import BAND_STRIP_BYTES, UncompressedStrips, band_readable, decoded_bytes, oversized_chunk_message

#: Length of each unit of OME's PhysicalSizeXUnit and of TIFF's ResolutionUnit, in micrometres.
_OME_UNIT_UM = {"pm": 1e-6, "nm": 1e-3, "µm": 1.0, "um": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6}
_RESUNIT_UM = {
    tifffile.RESUNIT.INCH: 25400.0,
    tifffile.RESUNIT.CENTIMETER: 1e4,
    tifffile.RESUNIT.MILLIMETER: 1e3,
    tifffile.RESUNIT.MICROMETER: 1.0,
}


@dataclass
class TiffParts:
    """What :func:`open_tiff` found: the pieces a :class:`~midog_viewer.io.Slide` is made of."""

    format: str
    levels: list[Any]
    mpp: float | None
    tile_size: tuple[int, int] | None
    handle: tifffile.TiffFile


def _format_of(tif: tifffile.TiffFile, n_levels: int) -> str:
    if tif.is_svs:
        return "aperio-svs"
    if tif.is_ndpi:
        return "hamamatsu-ndpi"
    if tif.is_ome:
        return "ome-tiff"
    return "pyramidal-tiff" if n_levels > 1 else "tiff"


def _ome_mpp(path: Path, tif: tifffile.TiffFile) -> float | None:
    """PhysicalSizeX of the first OME Pixels element, in µm (OME's default unit)."""
    try:
        root = ET.fromstring(tif.ome_metadata or "")
    except ET.ParseError:
        return None
    for element in root.iter():
        if element.tag.endswith("}Pixels") or element.tag == "Pixels":
            size = element.get("PhysicalSizeX")
            unit = element.get("PhysicalSizeXUnit", "µm")
            if size is None or unit not in _OME_UNIT_UM:
                return None
            number = metadata_number(size, path, "OME PhysicalSizeX")
            return plausible_mpp(number * _OME_UNIT_UM[unit]) if number else None
    return None


def _svs_mpp(path: Path, page: tifffile.TiffPage) -> float | None:
    """Aperio writes ``MPP = 0.499`` in the ImageDescription of the baseline page."""
    match = re.search(r"\|\s*MPP\s*=\s*([^|\r\n]*)", page.description or "")
    number = metadata_number(match.group(1), path, "Aperio MPP") if match else None
    return plausible_mpp(number) if number else None


def _resolution_mpp(path: Path, page: tifffile.TiffPage) -> float | None:
    """µm per pixel from XResolution (pixels per unit) and ResolutionUnit; None without a length unit."""
    unit_um = _RESUNIT_UM.get(page.resolutionunit)
    if unit_um is None:
        return None
    x_resolution = metadata_number(page.resolution[0] if page.resolution else 0.0, path, "XResolution")
    return plausible_mpp(unit_um / x_resolution) if x_resolution else None


def _mpp_of(path: Path, tif: tifffile.TiffFile, page: tifffile.TiffPage) -> float | None:
    if tif.is_svs:
        return _svs_mpp(path, page)
    if tif.is_ome:
        return _ome_mpp(path, tif) or _resolution_mpp(path, page)
    return _resolution_mpp(path, page)


def _squeezed_axes(shape: tuple[int, ...], axes: str) -> str:
    """Drop leading length-1 axes (a single page, time point or focal plane)."""
    while len(axes) > 2 and shape[0] == 1 and axes[0] not in "YX":
        shape, axes = shape[1:], axes[1:]
    return axes


def _check_layout(path: Path, series: tifffile.TiffPageSeries) -> str:
    """Return the squeezed axes of ``series`` or raise when it is not one 8-bit 2-D colour/gray image."""
    if series.dtype != np.uint8:
        raise SlideError(
            f"{path.name} holds {series.dtype} pixels; midog-viewer reads 8-bit brightfield (H&E) images "
            "only, so convert it to 8-bit RGB first."
        )
    axes = _squeezed_axes(series.shape, series.axes)
    shape = series.shape[len(series.shape) - len(axes) :]
    if axes == "YX":
        return axes
    if axes == "YXS" and shape[2] in (1, 2, 3, 4):
        return axes
    if axes in ("SYX", "CYX") and shape[0] in (1, 3, 4):
        return axes
    raise SlideError(
        f"{path.name} has an unsupported layout (axes {series.axes}, shape {series.shape}); "
        "midog-viewer opens single-plane 2-D RGB or grayscale images."
    )


def _check_complete(path: Path, page: tifffile.TiffPage) -> None:
    """Refuse a truncated file: every tile/strip of level 0 must lie inside the file."""
    size = path.stat().st_size
    ends = [offset + count for offset, count in zip(page.dataoffsets, page.databytecounts) if count]
    if not ends or max(ends) > size:
        raise SlideError(f"{path.name} is truncated: the file ends before its image data does (an incomplete copy?).")


def _check_size(path: Path, series: tifffile.TiffPageSeries) -> None:
    """Refuse an image with no pixels, and one whose compressed tiles/strips decode past the bound."""
    for level, pages in enumerate(series.levels):
        page = pages.keyframe
        if not page.imagewidth or not page.imagelength:
            raise SlideError(f"{path.name} holds an image of {page.imagewidth} × {page.imagelength} px: it has no pixels.")
        message = oversized_chunk_message(path.name, page, level)
        if message:
            raise SlideError(message)


def _band_source(path: Path, pages: tifffile.TiffPageSeries, axes: str) -> UncompressedStrips | None:
    """Large uncompressed strips of one level as an :class:`UncompressedStrips`, else None (zarr reads it)."""
    page = pages.keyframe
    if len(pages.pages) != 1 or not band_readable(page) or decoded_bytes(page) <= BAND_STRIP_BYTES:
        return None
    if axes not in ("YX", "YXS"):
        return None
    source = UncompressedStrips(path, page, tuple(pages.shape)[len(pages.shape) - len(axes) :])
    if source.missing_rows():
        raise SlideError(f"{path.name} is truncated: a strip holds fewer bytes than its rows need.")
    return source


def _level_array(path: Path, tif: tifffile.TiffFile, level: int, axes: str) -> Any:
    """Level ``level`` of the first series as a lazy (H, W, 3) uint8 array (zarr itself for tiled RGB)."""
    array = _band_source(path, tif.series[0].levels[level], axes)
    if array is None:
        array = zarr.open(tif.series[0].aszarr(level=level), mode="r")
    if axes == "YXS" and array.shape[-1] == 3 and array.ndim == 3:
        return StripView(array) if array.chunks[1] >= array.shape[1] else array
    squeezed = array.shape[array.ndim - len(axes) :]
    if array.ndim != len(axes):
        array = _Squeezed(array, squeezed)
    return RGBAdapter(array, axes)


class _Squeezed:
    """Index an array with leading length-1 axes as if they were not there."""

    def __init__(self, array: Any, shape: tuple[int, ...]) -> None:
        self._array = array
        self._lead = (0,) * (array.ndim - len(shape))
        self.shape = shape
        self.chunks = tuple(array.chunks[len(self._lead) :])

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        return self._array[self._lead + key]


@contextmanager
def _tifffile_quiet() -> Iterator[None]:
    """Silence tifffile's log warnings about damaged files: the SlideError we raise says it in one line."""
    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def open_tiff(path: Path) -> TiffParts:
    """Open a TIFF-family slide lazily; raise :class:`SlideError` for anything unreadable or unsupported."""
    with _tifffile_quiet():
        return _open_tiff(path)


def _open_tiff(path: Path) -> TiffParts:
    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:  # tifffile raises TiffFileError, ValueError, struct.error... on bad bytes
        raise SlideError(f"{path.name} is not a readable TIFF ({_reason(exc)}).") from exc
    try:
        if not tif.series:
            raise SlideError(f"{path.name} contains no readable image (a damaged or empty TIFF).")
        series = tif.series[0]
        axes = _check_layout(path, series)
        page = series.levels[0].keyframe
        _check_size(path, series)
        _check_complete(path, page)
        levels = [_level_array(path, tif, i, axes) for i in range(len(series.levels))]
        levels[0][0:1, 0:1]  # decode one tile now, so a corrupt file fails here and not in the viewer
        if len(levels) == 1:
            levels = add_overview_levels(levels)
        tile = (int(page.tilewidth), int(page.tilelength)) if page.is_tiled else None
        return TiffParts(_format_of(tif, len(series.levels)), levels, _mpp_of(path, tif, page), tile, tif)
    except SlideError:
        tif.close()
        raise
    except Exception as exc:
        tif.close()
        raise SlideError(f"{path.name} is a damaged TIFF ({_reason(exc)}).") from exc


def _reason(exc: Exception) -> str:
    """The first line of an exception's message, or its type when it has none."""
    text = str(exc).strip().splitlines()
    return text[0].rstrip(".") if text else type(exc).__name__
