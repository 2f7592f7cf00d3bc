"""Benchmark: what ``info`` and one tile cost on TIFF strip bombs, against a tiled TIFF of the same size.

    python benchmarks/tiff_bomb.py

Writes into a temporary folder (deleted at the end), from pre-compressed zeros, so nothing is held in
memory and nothing is kept:

* ``strip_20k``: 20,000 × 20,000 RGB in one deflate strip (a 5 MB file that decodes to 1.2 GB);
* ``strip_100k``: 100,000 × 100,000 RGB in one deflate strip (30 MB that decode to 30 GB);
* ``raw_strip_20k``: 20,000 × 20,000 RGB in one uncompressed strip (a 1.2 GB, sparse, file);
* ``strip_midog``: a MIDOG HPF (7215 × 5412 RGB) in one deflate strip: 117 MB decoded, just under the
  bound, so it opens (the worst that an accepted file costs);
* the baselines ``tiled_20k``, ``tiled_100k`` and ``tiled_midog``: the same images in 512 px deflate tiles.

Each measurement runs in its own interpreter, so its peak RSS (``VmHWM``) is its own: ``info`` is
``midog-viewer info PATH``; ``tile`` is ``open_slide`` plus one 256 × 256 ``read_region`` at the centre of
level 0. Printed, one JSON object per file and action: seconds (the action only, after the imports),
peak RSS in MB, RSS after the imports alone, the exit status (2: refused in one line) and the ratios of
time and peak RSS to the tiled baseline of the same size measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # measure the checkout this script lives in, not another installed copy


def _bomb_writer():
    """``write_deflate_bomb`` from the tests' conftest: one definition of how a bomb is built."""
    spec = importlib.util.spec_from_file_location("_io_test_helpers", ROOT / "tests" / "io" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_deflate_bomb


def _vm(field: str) -> float:
    """A ``/proc/self/status`` figure in MB (VmHWM: peak RSS; VmRSS: RSS now)."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+)", text).group(1)) / 1024


def _worker(action: str, path: str) -> None:
    from midog_viewer.cli import main
    from midog_viewer.errors import SlideError
    from midog_viewer.io import open_slide

    imported = _vm("VmRSS")
    start = time.perf_counter()
    if action == "info":
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
            status = main(["info", path])
        message = err.getvalue().strip()
    else:
        try:
            with open_slide(path) as slide:
                tile = slide.read_region(slide.width // 2, slide.height // 2, 256, 256)
                assert tile.shape == (256, 256, 3)
            status, message = 0, ""
        except SlideError as exc:
            status, message = 2, str(exc)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": round(seconds, 3), "peak_rss_mb": round(_vm("VmHWM")), "rss_after_imports_mb":
                      round(imported), "status": status, "message": message[:120]}))


def _measure(action: str, path: Path) -> dict:
    result = subprocess.run([sys.executable, __file__, "--worker", action, str(path)], capture_output=True, text=True,
                            timeout=600, cwd=ROOT)
    if result.returncode != 0:
        return {"status": "crashed", "stderr": result.stderr.strip().splitlines()[-1:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def _write_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """name → (path, name of its tiled baseline)."""
    write = _bomb_writer()
    files = {
        "tiled_20k": (write(folder / "tiled_20k.tif", 20_000, 20_000, tile=512), "tiled_20k"),
        "strip_20k": (write(folder / "strip_20k.tif", 20_000, 20_000), "tiled_20k"),
        "tiled_100k": (write(folder / "tiled_100k.tif", 100_000, 100_000, tile=512), "tiled_100k"),
        "strip_100k": (write(folder / "strip_100k.tif", 100_000, 100_000), "tiled_100k"),
    }
    files["tiled_midog"] = (write(folder / "tiled_midog.tif", 7215, 5412, tile=512), "tiled_midog")
    files["strip_midog"] = (write(folder / "strip_midog.tif", 7215, 5412), "tiled_midog")
    raw = tifffile.memmap(folder / "raw_strip_20k.tif", shape=(20_000, 20_000, 3), dtype=np.uint8, photometric="rgb",
                          rowsperstrip=20_000, metadata=None)
    raw.flush()
    del raw
    files["raw_strip_20k"] = (folder / "raw_strip_20k.tif", "tiled_20k")
    return files


def main() -> None:
    """Write the files, measure each action in a fresh interpreter, print one JSON line per measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=2, metavar=("ACTION", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(*args.worker)
        return
    with tempfile.TemporaryDirectory(prefix="midog-tiff-bomb-") as tmp:
        files = _write_files(Path(tmp))
        results: dict[tuple[str, str], dict] = {}
        for name, (path, baseline) in files.items():
            for action in ("info", "tile"):
                figures = _measure(action, path)
                results[name, action] = figures
                base = results.get((baseline, action))
                row = {"file": name, "file_mb": round(path.stat().st_size / 1e6, 1), "action": action, **figures}
                if base and name != baseline and "seconds" in figures:
                    row["baseline"] = baseline
                    row["time_ratio"] = round(figures["seconds"] / max(base["seconds"], 1e-3), 2)
                    row["peak_rss_ratio"] = round(figures["peak_rss_mb"] / base["peak_rss_mb"], 2)
                print(json.dumps(row, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
