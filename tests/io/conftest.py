"""Small synthetic slides of every layout the slide layer reads, written with tifffile, Pillow or (NDPI) by hand."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image


@pytest.fixture(scope="session")
def pixels() -> np.ndarray:
    """A 600×800 RGB image with smooth gradients plus noise (so JPEG keeps it recognisable)."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:600, 0:800]
    base = np.stack([yy * 255 // 600, xx * 255 // 800, (yy + xx) * 255 // 1400], axis=2)
    return np.clip(base + rng.integers(-10, 11, base.shape), 0, 255).astype(np.uint8)


def write_ome_pyramid(path: Path, image: np.ndarray, mpp: float = 0.5) -> Path:
    """OME-TIFF with the lower levels in SubIFDs (as bfconvert/QuPath write them)."""
    with tifffile.TiffWriter(path, ome=True) as tw:
        options = dict(photometric="rgb", tile=(128, 128), compression="zlib")
        tw.write(image, subifds=2, metadata={"axes": "YXS", "PhysicalSizeX": mpp, "PhysicalSizeY": mpp}, **options)
        tw.write(image[::2, ::2], subfiletype=1, **options)
        tw.write(image[::4, ::4], subfiletype=1, **options)
    return path


def write_page_pyramid(path: Path, image: np.ndarray) -> Path:
    """Generic pyramid: each level a separate top-level page (reduced-resolution subfile type)."""
    with tifffile.TiffWriter(path) as tw:
        for factor in (1, 2, 4):
            tw.write(image[::factor, ::factor], photometric="rgb", tile=(64, 64), subfiletype=int(factor > 1), metadata=None)
    return path


def write_svs_like(path: Path, image: np.ndarray, mpp: float = 0.25) -> Path:
    """An Aperio-style TIFF: tiled JPEG baseline whose ImageDescription carries ``MPP = …``."""
    description = f"Aperio Image Library v12.0.0 \n{image.shape[1]}x{image.shape[0]} (256x256) JPEG/RGB Q=90|AppMag = 40|MPP = {mpp}"
    tifffile.imwrite(path, image, photometric="rgb", tile=(256, 256), compression="jpeg", description=description, metadata=None)
    return path


def write_strip_tiff(path: Path, image: np.ndarray, dpi: float | None = None) -> Path:
    """Plain strip TIFF (zlib, 16 rows per strip), optionally with its resolution in pixels per inch."""
    extra = {"resolution": (dpi, dpi), "resolutionunit": "INCH"} if dpi else {}
    tifffile.imwrite(path, image, photometric="rgb", rowsperstrip=16, compression="zlib", metadata=None, **extra)
    return path


def write_ndpi_like(path: Path, levels: list[np.ndarray], mpp: float, magnification: float = 40.0) -> Path:
    """A minimal Hamamatsu NDPI (tifffile cannot write one): classic 12-byte IFD entries but 8-byte IFD
    offsets, each IFD followed by the entries' high 32 offset bits; Make plus the NDPI FileFormat (65420)
    and Magnification (65421) tags; one uncompressed RGB strip per pyramid level; resolution in cm."""
    out = bytearray(b"II*\x00" + bytes(8))
    pointer = 4
    for k, image in enumerate(levels):
        height, width = image.shape[:2]

        def blob(data: bytes) -> int:
            offset = len(out)
            out.extend(data + b"\x00" * (len(data) % 2))
            return offset

        pixels = blob(image.tobytes())
        per_cm = 1e4 / (mpp * 2**k)
        resolution = blob(struct.pack("<2I", round(per_cm * 1000), 1000))
        make = b"Hamamatsu\x00"
        entries = sorted([  # (code, TIFF type, count, 4-byte value or offset)
            (256, 4, 1, struct.pack("<I", width)),
            (257, 4, 1, struct.pack("<I", height)),
            (258, 3, 3, struct.pack("<I", blob(struct.pack("<3H", 8, 8, 8)))),
            (259, 3, 1, struct.pack("<H2x", 1)),
            (262, 3, 1, struct.pack("<H2x", 2)),
            (271, 2, len(make), struct.pack("<I", blob(make))),
            (273, 4, 1, struct.pack("<I", pixels)),
            (277, 3, 1, struct.pack("<H2x", 3)),
            (278, 4, 1, struct.pack("<I", height)),
            (279, 4, 1, struct.pack("<I", image.nbytes)),
            (282, 5, 1, struct.pack("<I", resolution)),
            (283, 5, 1, struct.pack("<I", resolution)),
            (284, 3, 1, struct.pack("<H2x", 1)),
            (296, 3, 1, struct.pack("<H2x", 3)),
            (65420, 4, 1, struct.pack("<I", 1)),
            (65421, 11, 1, struct.pack("<f", magnification / 2**k)),
        ])
        ifd = len(out)
        struct.pack_into("<Q", out, pointer, ifd)
        out += struct.pack("<H", len(entries))
        for code, kind, count, value in entries:
            out += struct.pack("<HHI", code, kind, count) + value
        pointer = len(out)
        out += bytes(8) + bytes(4 * len(entries))
    Path(path).write_bytes(bytes(out))
    return Path(path)


def deflate_zeros(size: int, block: int = 1 << 20) -> bytes:
    """A valid zlib stream of ``size`` zero bytes, in milliseconds even for gigabytes.

    After a full flush the compressor starts afresh, so every further block of zeros compresses to the same
    bytes: one is computed and repeated, then a final empty block and the Adler-32 of ``size`` zeros
    (a = 1, b = size mod 65521) end the stream.
    """
    if size <= block:
        return zlib.compress(bytes(size), 9)
    packer = zlib.compressobj(9)
    head = packer.compress(bytes(block)) + packer.flush(zlib.Z_FULL_FLUSH)
    body = packer.compress(bytes(block)) + packer.flush(zlib.Z_FULL_FLUSH)
    count, rest = divmod(size, block)
    tail = packer.compress(bytes(rest)) + packer.flush(zlib.Z_FULL_FLUSH) if rest else b""
    return head + body * (count - 1) + tail + b"\x03\x00" + struct.pack(">I", (size % 65521) << 16 | 1)


def write_deflate_bomb(path: Path, width: int, height: int, tile: int | None = None) -> Path:
    """A black RGB TIFF of ``width`` × ``height`` px in deflate strips (one strip: the whole image) or tiles.

    Written from pre-compressed chunks, so the pixels are never in memory: a 20,000² image is a 5 MB file.
    """
    options: dict = {"tile": (tile, tile)} if tile else {"rowsperstrip": height}
    if tile:
        count = -(-width // tile) * -(-height // tile)
        one = deflate_zeros(tile * tile * 3)
        chunks = (one for _ in range(count))
    else:
        chunks = iter([deflate_zeros(width * height * 3)])
    tifffile.imwrite(path, chunks, shape=(height, width, 3), dtype=np.uint8, photometric="rgb",
                     compression="zlib", metadata=None, bigtiff=width * height * 3 >= 2**32, **options)
    return Path(path)


@pytest.fixture(scope="session")
def zeros_deflater():
    """:func:`deflate_zeros`, for tests that build compressed chunks of any size."""
    return deflate_zeros


@pytest.fixture(scope="session")
def bomb_writer():
    """:func:`write_deflate_bomb`: black deflate TIFFs of any size, written in milliseconds."""
    return write_deflate_bomb


@pytest.fixture(scope="session")
def strip_tiff_writer():
    """:func:`write_strip_tiff`, for tests that need a strip TIFF with particular resolution tags."""
    return write_strip_tiff


@pytest.fixture(scope="session")
def layouts(tmp_path_factory: pytest.TempPathFactory, pixels: np.ndarray) -> dict[str, Path]:
    """One file per layout (written once per session; tests only read them): name → path."""
    tmp_path = tmp_path_factory.mktemp("layouts")
    rgba = np.dstack([pixels, np.full(pixels.shape[:2], 128, np.uint8)])
    files = {
        "ome": write_ome_pyramid(tmp_path / "pyramid.ome.tif", pixels),
        "pages": write_page_pyramid(tmp_path / "pages.tif", pixels),
        "svs": write_svs_like(tmp_path / "slide.svs", pixels),
        "strip": write_strip_tiff(tmp_path / "strip.tif", pixels, dpi=25400 / 0.23),
        "tiled": tmp_path / "tiled.tif",
        "rgba": tmp_path / "rgba.tif",
        "planar": tmp_path / "planar.tif",
        "gray": tmp_path / "gray.tif",
        "png": tmp_path / "image.png",
        "png_rgba": tmp_path / "rgba.png",
        "jpeg": tmp_path / "image.jpg",
        "single_plane_stack": tmp_path / "one_plane.tif",
        "ndpi": write_ndpi_like(tmp_path / "slide.ndpi", [pixels, pixels[::2, ::2], pixels[::4, ::4]], mpp=0.23),
    }
    tifffile.imwrite(files["single_plane_stack"], rgba[None], photometric="rgb", extrasamples=["unassalpha"], tile=(64, 64))
    tifffile.imwrite(files["tiled"], pixels, photometric="rgb", tile=(128, 128), compression="zlib", metadata=None)
    tifffile.imwrite(files["rgba"], rgba, photometric="rgb", extrasamples=["unassalpha"], metadata=None)
    tifffile.imwrite(files["planar"], np.moveaxis(pixels, 2, 0), photometric="rgb", planarconfig="separate", metadata=None)
    tifffile.imwrite(files["gray"], pixels[:, :, 1], photometric="minisblack", metadata=None)
    Image.fromarray(pixels).save(files["png"], dpi=(25400 / 0.25, 25400 / 0.25), compress_level=1)
    Image.fromarray(rgba).save(files["png_rgba"], compress_level=1)
    Image.fromarray(pixels).save(files["jpeg"], quality=95)
    return files
