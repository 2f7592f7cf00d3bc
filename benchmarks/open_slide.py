"""Benchmark: open a 40,000² JPEG-tiled pyramidal TIFF and an untiled MIDOG-sized TIFF in napari.

    python benchmarks/open_slide.py            (re-runs itself under ``xvfb-run`` when there is no display)
    xvfb-run -a -s "-screen 0 1920x1080x24" python benchmarks/open_slide.py

The two slides are written once into ``$MIDOG_VIEWER_CACHE/benchmarks`` (default
``~/.cache/midog-viewer/benchmarks``), tile by tile from a generator (the 40k slide's 4.8 GB of pixels are
never in memory), tiled from the synthetic H&E sample. Each slide is then measured in its own process
(so peak RSS is that slide's), in a napari viewer that already exists, through our reader
(``viewer.open(path, plugin="midog-viewer")``). Printed, one JSON object per slide:

* ``first_frame_s``: from ``viewer.open`` (which calls ``open_slide``) to the first frame rendered
  (``viewer.screenshot`` forces a draw and reads it back), in a viewer that has shown a slide before
  (``first_frame_cold_s``: the same for the process's very first layer, which also pays napari's
  one-time set-up); ``first_frame_baseline_s``: tifffile reading the pixels that frame needs (same
  level and region, or the level-0 pixels under a computed overview level) straight from the file;
  and their ratio;
* ``fov_changes``: three field-of-view changes to level 0 (1 screen px per level-0 px) at three places:
  time to the rendered frame, the tifffile baseline for the same level-0 region, and the ratio;
* ``first_frame_add_image_s``: the same through ``open_slide`` + ``viewer.add_image`` (no plugin lookup,
  no progress bar), as a widget switching slides would add one;
* ``napari_floor_s``: napari adding and drawing the same pixels from a numpy array (no reading at all);
* ``peak_rss_mb``: peak resident memory of the process up to the last field-of-view change (taken
  before the baselines read the pixels again); ``rss_viewer_only_mb``: the same before the slide.

Targets (issue 2): first frame ≤ 0.5 s, field-of-view change ≤ 0.1 s, peak RSS ≤ 500 MB for the 40k slide.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tifffile

from midog_viewer._napari import slide_layer_data
from midog_viewer.io import open_slide
from midog_viewer.synthetic import cache_dir, make_hpf

TILE = 256
WSI_SIDE = 40_000
WSI_MPP = 0.25
MIDOG_SHAPE = (5412, 7215)  # height, width of a MIDOG 2021 HPF
MIDOG_MPP = 0.23
CANVAS = (1280, 800)  # width, height of the viewer window
PLACES = ((0.3, 0.25), (0.5, 0.6), (0.85, 0.8))  # (x, y) as fractions of the slide


def _pattern_levels(levels: int) -> list[np.ndarray]:
    """The synthetic HPF and its 2× area-averaged reductions: the periodic texture each level repeats."""
    pattern = make_hpf(seed=0).image  # 2048 × 1536: halves evenly six times
    out = [pattern]
    for _ in range(levels - 1):
        h, w = out[-1].shape[:2]
        out.append(out[-1].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3)).round().astype(np.uint8))
    return out


def _tiles(pattern: np.ndarray, height: int, width: int):
    """Row-major 256² tiles of a (height × width) image that repeats ``pattern``; never the image itself."""
    ph, pw = pattern.shape[:2]
    for ty in range(0, height, TILE):
        rows = (ty + np.arange(TILE)) % ph
        for tx in range(0, width, TILE):
            yield pattern[np.ix_(rows, (tx + np.arange(TILE)) % pw)]


def write_wsi(path: Path) -> None:
    """A 40,000² OME pyramid (JPEG tiles, SubIFDs down to 625 px), written tile by tile."""
    sides = [WSI_SIDE >> k for k in range(7)]
    patterns = _pattern_levels(len(sides))
    partial = path.with_suffix(".part")
    with tifffile.TiffWriter(partial, bigtiff=True, ome=True) as tw:
        for k, side in enumerate(sides):
            level_options = (
                {"subifds": len(sides) - 1, "metadata": {"axes": "YXS", "PhysicalSizeX": WSI_MPP, "PhysicalSizeY": WSI_MPP}}
                if k == 0
                else {"subfiletype": 1}
            )
            tw.write(
                _tiles(patterns[k], side, side),
                shape=(side, side, 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": 85},
                maxworkers=2,
                **level_options,
            )
    partial.rename(path)


def write_midog(path: Path) -> None:
    """An untiled (strip, uncompressed) 7215 × 5412 RGB TIFF at 0.23 µm/px, written strip by strip."""
    pattern = _pattern_levels(1)[0]
    height, width = MIDOG_SHAPE
    rows_per_strip = 16
    cols = np.arange(width) % pattern.shape[1]
    strips = (
        pattern[np.ix_((y + np.arange(min(rows_per_strip, height - y))) % pattern.shape[0], cols)]
        for y in range(0, height, rows_per_strip)
    )
    partial = path.with_suffix(".part")
    tifffile.imwrite(
        partial, strips, shape=(height, width, 3), dtype=np.uint8, photometric="rgb", rowsperstrip=rows_per_strip,
        resolution=(1e4 / MIDOG_MPP, 1e4 / MIDOG_MPP), resolutionunit="CENTIMETER", metadata=None,
    )
    partial.rename(path)


def slides() -> dict[str, Path]:
    """The two benchmark slides, written on first use."""
    folder = cache_dir() / "benchmarks"
    folder.mkdir(parents=True, exist_ok=True)
    files = {"wsi_40k_jpeg_pyramid": folder / "wsi_40k_jpeg.ome.tif", "midog_hpf_untiled": folder / "midog_7215x5412.tif"}
    for name, writer in (("wsi_40k_jpeg_pyramid", write_wsi), ("midog_hpf_untiled", write_midog)):
        if not files[name].is_file():
            start = time.perf_counter()
            writer(files[name])
            print(f"wrote {files[name]} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return files


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _baseline_read(path: Path, level: int, corners: np.ndarray) -> float:
    """Seconds for tifffile (fresh handle, its zarr store) to read the pixels napari displays.

    For a level the file has, that is the displayed region of that level; for an overview level we
    compute (a non-pyramidal file), it is the level-0 region under it, the least that must be decoded.
    """
    import zarr

    (y0, x0), (y1, x1) = corners[0][:2], corners[1][:2] + 1
    start = time.perf_counter()
    with tifffile.TiffFile(path) as tif:
        stored = len(tif.series[0].levels)
        factor = 1 << max(0, level - stored + 1)
        array = zarr.open(tif.series[0].aszarr(level=min(level, stored - 1)), mode="r")
        np.asarray(array[y0 * factor : y1 * factor, x0 * factor : x1 * factor])
    return time.perf_counter() - start


def _render(viewer) -> np.ndarray:
    """Draw one frame now (what the screen would show) and read it back."""
    return viewer.screenshot(canvas_only=True, flash=False)


def _napari_floor(viewer, pixels: np.ndarray) -> float:
    """Seconds napari itself takes to add and draw ``pixels`` (what the first frame showed) from memory:
    the part of the first frame no reader can remove."""
    viewer.layers.clear()
    _render(viewer)
    start = time.perf_counter()
    viewer.add_image(pixels, rgb=True, contrast_limits=(0, 255))
    _render(viewer)
    seconds = time.perf_counter() - start
    viewer.layers.clear()
    return seconds


def measure(name: str, path: Path) -> dict:
    """Open ``path`` in a fresh viewer and time the first frame and three level-0 field-of-view changes."""
    import napari

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(*CANVAS)
    napari.qt.get_qapp().processEvents()
    _render(viewer)  # the empty canvas: GL context and shaders ready, as in a viewer already on screen
    rss_viewer = _peak_rss_mb()

    # Cold: the first layer of the process also pays napari's one-time costs (pint's unit registry,
    # shader compilation) and the first import of tifffile/zarr/imagecodecs.
    start = time.perf_counter()
    [layer] = viewer.open(str(path), plugin="midog-viewer")
    _render(viewer)
    cold = time.perf_counter() - start
    viewer.layers.clear()
    _render(viewer)

    # Warm: the viewer has shown a slide before; this is the time a pathologist waits for the next one.
    start = time.perf_counter()
    [layer] = viewer.open(str(path), plugin="midog-viewer")
    frame = _render(viewer)
    first_frame = time.perf_counter() - start
    slide = layer.metadata["slide"]
    shown = [(int(layer.data_level), layer.corner_pixels.copy())]

    # The same without viewer.open's plugin machinery and progress bar: open_slide + add_image + draw
    # (how a widget that switches slides would add one).
    viewer.layers.clear()
    _render(viewer)
    start = time.perf_counter()
    data, kwargs, _ = slide_layer_data(open_slide(path))
    layer = viewer.add_image(data, **kwargs)
    _render(viewer)
    first_frame_add_image = time.perf_counter() - start

    fov_seconds = []
    camera = viewer.scene.camera
    for fx, fy in PLACES:
        start = time.perf_counter()
        camera.center = (fy * slide.height * slide.mpp, fx * slide.width * slide.mpp)
        camera.zoom = 1.0 / slide.mpp  # one screen pixel per level-0 pixel
        _render(viewer)
        fov_seconds.append(time.perf_counter() - start)
        shown.append((int(layer.data_level), layer.corner_pixels.copy()))
    peak_rss = _peak_rss_mb()  # before the baselines below, which read the same pixels a second time

    level, corners = shown[0]
    first_pixels = np.asarray(layer.data[level][corners[0][0] : corners[1][0] + 1, corners[0][1] : corners[1][1] + 1])
    floor = _napari_floor(viewer, first_pixels)
    viewer.close()
    first_baseline = _baseline_read(path, level, corners)
    fov = []
    for (fx, fy), seconds, (level, corners) in zip(PLACES, fov_seconds, shown[1:]):
        baseline = _baseline_read(path, level, corners)
        fov.append(
            {
                "place": [fx, fy],
                "level": level,
                "seconds": round(seconds, 4),
                "baseline_s": round(baseline, 4),
                "ratio": round(seconds / baseline, 2),
            }
        )
    return {
        "slide": name,
        "path": str(path),
        "size": [slide.width, slide.height],
        "levels": len(slide.levels),
        "format": slide.format,
        "canvas": list(CANVAS),
        "first_frame_cold_s": round(cold, 4),
        "first_frame_s": round(first_frame, 4),
        "first_frame_level": shown[0][0],
        "first_frame_baseline_s": round(first_baseline, 4),
        "first_frame_ratio": round(first_frame / first_baseline, 2),
        "first_frame_shows_tissue": bool(frame[..., :3].mean() < 240),
        "first_frame_add_image_s": round(first_frame_add_image, 4),
        "napari_floor_s": round(floor, 4),
        "fov_changes": fov,
        "fov_change_max_s": round(max(fov_seconds), 4),
        "rss_viewer_only_mb": round(rss_viewer, 1),
        "peak_rss_mb": round(peak_rss, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slide", help=argparse.SUPPRESS)  # internal: measure one slide in this process
    args = parser.parse_args()
    if not os.environ.get("DISPLAY") and shutil.which("xvfb-run"):
        command = ["xvfb-run", "-a", "-s", "-screen 0 1920x1080x24", sys.executable, *sys.argv]
        return subprocess.call(command, env={**os.environ, "QT_QPA_PLATFORM": "xcb"})
    files = slides()
    if args.slide:
        print(json.dumps(measure(args.slide, files[args.slide])))
        return 0
    for name in files:
        result = subprocess.run([sys.executable, __file__, "--slide", name], capture_output=True, text=True)
        if result.returncode != 0:
            print(result.stderr, file=sys.stderr)
            return result.returncode
        print(result.stdout.strip().splitlines()[-1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
