"""Cohort figures in one run: tiles/s with 1 and 2 local workers (and the ratio), the share of tiles tissue
detection removes on the real SVS and on a padded copy, time per mm² of tissue, and peak RSS per worker.

The built-in model on CPU (``--device cuda`` for GPU workers; on a machine with CUDA the run also prints tiles/s
of one GPU at batch 8 and 16 with AMP, against batch 1 as the baseline). The tiles/s workload is a small cohort of synthetic
fields (all tissue), run through :class:`~midog_viewer.batch.run.CohortRun` after the cluster is up and the
model loaded on every worker, so the figure is planning + detection + store writes, not start-up. Prints
one JSON document.

    python benchmarks/cohort.py                  # about 5 minutes on two loaded cores
    python benchmarks/cohort.py --no-svs-detect  # skip detecting the SVS (time per mm² of tissue)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from midog_viewer.batch.cluster import start, stop  # noqa: E402
from midog_viewer.batch.run import CohortRun, run_key  # noqa: E402
from midog_viewer.batch.worker import worker_peak_rss  # noqa: E402
from midog_viewer.detect import Detector  # noqa: E402
from midog_viewer.detect.tissue import detect_tissue, tissue_filter  # noqa: E402
from midog_viewer.io import open_slide  # noqa: E402
from midog_viewer.review.store import ReviewStore  # noqa: E402
from midog_viewer.synthetic import make_hpf, write_hpf_tiff  # noqa: E402

SVS = Path(__file__).resolve().parents[2] / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"


def _cohort(folder: Path, slides: int) -> list[Path]:
    """``slides`` synthetic fields of 1100 x 1000 px (3 x 2 tiles of 512 each), all tissue."""
    paths = []
    for seed in range(slides):
        path = folder / f"field{seed}.tiff"
        write_hpf_tiff(make_hpf(seed=100 + seed, width=1100, height=1000), path)
        paths.append(path)
    return paths


def _padded(folder: Path, factor: int = 2) -> Path:
    """The SVS's level 0 pasted into the top-left of a white canvas ``factor`` times as wide and tall (tiled TIFF)."""
    import tifffile

    with open_slide(SVS) as slide:
        pixels, mpp = slide.read_region(0, 0, slide.width, slide.height), slide.mpp
    canvas = np.full((pixels.shape[0] * factor, pixels.shape[1] * factor, 3), 255, np.uint8)
    canvas[: pixels.shape[0], : pixels.shape[1]] = pixels
    path = folder / "padded.tiff"
    per_cm = 1e4 / mpp
    tifffile.imwrite(path, canvas, photometric="rgb", tile=(256, 256), compression="zlib",
                     compressionargs={"level": 1}, resolution=(per_cm, per_cm), resolutionunit="CENTIMETER")
    return path


def _removed(detector: Detector, path: Path) -> dict:
    """Planned tiles, tiles kept by tissue detection, the share removed and the mask's time."""
    with open_slide(path) as slide:
        began = time.perf_counter()
        tissue = detect_tissue(slide)
        seconds = time.perf_counter() - began
        planned = len(detector.plan(slide)[0])
        kept = len(detector.plan(slide, None, tissue_filter(tissue))[0])
        area_mm2 = slide.width * slide.height * (slide.mpp / 1000) ** 2 if slide.mpp else None
    return {"size": [slide.width, slide.height], "planned_tiles": planned, "kept_tiles": kept,
            "removed_share": round(1 - kept / planned, 3), "tissue_fraction": round(tissue.fraction, 3),
            "tissue_mm2": round(tissue.fraction * area_mm2, 3) if area_mm2 else None,
            "tissue_seconds": round(seconds, 2)}


def _timed_run(client, paths: list[Path], db: Path) -> tuple[float, int]:
    with ReviewStore(db) as store:
        began = time.perf_counter()
        result = CohortRun(client, store, paths, run_key(None, None), "demo-tiny").run()
        seconds = time.perf_counter() - began
    assert not result.failed, result.failed
    return seconds, result.tiles_detected


def _gpu_batches(batches: tuple[int, ...] = (1, 8, 16), repeats: int = 3) -> dict | None:
    """Tiles/s of one GPU (AMP) on the SVS's tissue tiles at each batch size; None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    figures: dict = {"gpu": torch.cuda.get_device_name(0)}
    with open_slide(SVS) as slide:
        for batch in batches:
            detector = Detector(device="cuda", batch_size=batch)
            tissue = tissue_filter(detect_tissue(slide))
            detector.detect(slide, tile_filter=tissue)  # warm-up: kernels, cudnn autotune
            torch.cuda.synchronize()
            began = time.perf_counter()
            for _ in range(repeats):
                detector.detect(slide, tile_filter=tissue)
            torch.cuda.synchronize()
            seconds = (time.perf_counter() - began) / repeats
            tiles = len(detector.plan(slide, None, tissue)[0])
            figures[f"batch_{batch}"] = {"tiles": tiles, "seconds": round(seconds, 3),
                                         "tiles_per_s": round(tiles / seconds, 1), "amp": detector.use_amp}
    base = figures["batch_1"]["tiles_per_s"]
    for batch in batches[1:]:
        figures[f"batch_{batch}"]["ratio_to_batch_1"] = round(figures[f"batch_{batch}"]["tiles_per_s"] / base, 2)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--slides", type=int, default=4, help="synthetic fields in the tiles/s cohort")
    parser.add_argument("--no-svs-detect", action="store_true", help="skip the time per mm² of tissue")
    args = parser.parse_args()
    report: dict = {"python": platform.python_version(), "cpus": os.cpu_count(), "device": args.device,
                    "load_average_1min": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cohort = _cohort(folder, args.slides)
        detector = Detector(device="cpu")
        report["tissue"] = {"svs": _removed(detector, SVS), "padded_svs_2x2": _removed(detector, _padded(folder))}
        speeds = {}
        for workers in (1, 2):
            client, cluster = start(None, workers, args.device, None, None)
            try:
                client.run(lambda: None)  # every worker up, model loaded
                seconds, tiles = _timed_run(client, cohort, folder / f"w{workers}.db")
                speeds[workers] = tiles / seconds
                report[f"workers_{workers}"] = {"tiles": tiles, "seconds": round(seconds, 2),
                                                "tiles_per_s": round(tiles / seconds, 3)}
                if workers == 2 and not args.no_svs_detect:
                    seconds, tiles = _timed_run(client, [SVS], folder / "svs.db")
                    mm2 = report["tissue"]["svs"]["tissue_mm2"]
                    report["svs_detect"] = {"tiles": tiles, "seconds": round(seconds, 2), "tissue_mm2": mm2,
                                            "seconds_per_tissue_mm2": round(seconds / mm2, 1)}
                rss = client.run(worker_peak_rss)
                report[f"workers_{workers}"]["peak_rss_mib_per_worker"] = sorted(
                    round(v / 2**20) for v in rss.values())
            finally:
                stop(client, cluster)
        report["speedup_2_over_1_workers"] = round(speeds[2] / speeds[1], 2)
    gpu = _gpu_batches()
    if gpu is not None:
        report["one_gpu_amp"] = gpu
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
