"""PNG and JPEG images (tiles, HPF exports) through Pillow.

These formats cannot be decoded region by region, so the image is decoded once into one (H, W, 3)
uint8 array (RGBA loses alpha, grayscale and palette images become RGB, 16-bit images are refused)
and its overview levels are computed lazily from it. Pillow's decompression-bomb limit (about 179
megapixels) stays in force: larger images should be converted to a tiled TIFF.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from midog_viewer.errors import SlideError
from midog_viewer.io.levels import add_overview_levels
from midog_viewer.io.mpp import plausible_mpp

_FORMATS = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg"}
_EIGHT_BIT_MODES = {"RGB", "RGBA", "L", "LA", "P", "PA", "CMYK", "YCbCr", "1", "RGBX"}


@dataclass
class RasterParts:
    """What :func:`open_raster` found: the pieces a :class:`~midog_viewer.io.Slide` is made of."""

    format: str
    levels: list[Any]
    mpp: float | None


def open_raster(path: Path) -> RasterParts:
    """Decode a PNG or JPEG into level 0 and lazy overview levels; raise :class:`SlideError` if unreadable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                kind = _FORMATS.get(image.format or "")
                if kind is None:
                    raise SlideError(f"{path.name} is a {image.format} image; midog-viewer opens PNG and JPEG images.")
                if image.mode not in _EIGHT_BIT_MODES:
                    raise SlideError(
                        f"{path.name} is a {image.mode} (not 8-bit) image; midog-viewer reads 8-bit "
                        "brightfield (H&E) images only, so convert it to 8-bit RGB first."
                    )
                dpi = image.info.get("dpi")
                pixels = np.asarray(image.convert("RGB"))
    except SlideError:
        raise
    except Image.UnidentifiedImageError as exc:
        raise SlideError(f"{path.name} is not a readable PNG or JPEG image (damaged or incomplete).") from exc
    except Image.DecompressionBombError as exc:
        raise SlideError(f"{path.name} is too large to decode whole; convert it to a tiled pyramidal TIFF.") from exc
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... on damaged data
        raise SlideError(f"{path.name} is a damaged {path.suffix.lstrip('.').upper() or 'image'} file ({exc}).") from exc
    mpp = plausible_mpp(25400.0 / float(dpi[0])) if dpi and float(dpi[0]) > 0 else None
    return RasterParts(kind, add_overview_levels([pixels]), mpp)
