"""Detector speed: tiles per second of the R-50 and X101-64x4d cascades, and the latency of one screen view.

Random weights (speed does not depend on them: the RPN always hands 1000 proposals per tile to the cascade).
Prints one JSON document. Within the same run it compares each batch size against batch 1 (the baseline),
AMP against fp32 on CUDA, and our engine against mmdet's ``inference_detector`` on the same checkpoint when
mmdet happens to be importable.

    python benchmarks/detect.py                      # CPU: one timed pass per batch size
    python benchmarks/detect.py --device cuda --iters 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from midog_viewer.detect import CascadeConfig, Detector, build_cascade_rcnn  # noqa: E402
from midog_viewer.detect.engine import choose_device  # noqa: E402

TILE = 512
VIEW = (1920, 1080)


class ArraySlide:
    """An in-memory slide (so the figures measure the engine, not a file decoder)."""

    def __init__(self, pixels: np.ndarray) -> None:
        self.pixels = pixels
        self.height, self.width = pixels.shape[:2]
        self.mpp = 0.25

    def read_region(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        return self.pixels[y : y + h, x : x + w]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tiles_per_second(model, device: torch.device, batch: int, iters: int, amp: bool, warm_up: bool) -> float:
    """Model forward (preprocessing, RPN, cascade, NMS) on ``batch`` random 512 px tiles, ``iters`` times."""
    generator = torch.Generator().manual_seed(0)
    images = [(torch.rand(3, TILE, TILE, generator=generator) * 255).to(device) for _ in range(batch)]
    with torch.inference_mode(), torch.autocast(device_type="cuda", dtype=torch.float16, enabled=amp):
        if warm_up:
            model(images)  # cuDNN autotuning, allocator
        _sync(device)
        start = time.perf_counter()
        for _ in range(iters):
            model(images)
        _sync(device)
    return batch * iters / (time.perf_counter() - start)


def view_latency(detector: Detector, iters: int, stain: bool) -> float:
    """Seconds for Detector.detect on a 1920 × 1080 view (15 tiles), tile reads from memory included."""
    rng = np.random.default_rng(0)
    slide = ArraySlide(rng.integers(0, 256, (VIEW[1], VIEW[0], 3), dtype=np.uint8))
    detector.stain_normalize = stain
    detector.detect(slide)
    _sync(detector.device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        detector.detect(slide)
        _sync(detector.device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def mmdet_comparison(iters: int) -> dict:
    """Our engine vs mmdet's inference_detector on the shared reference checkpoint, when mmdet is importable."""
    try:
        from mmdet.apis import inference_detector, init_detector
    except ImportError as exc:
        return {"available": False, "reason": f"mmdet is not importable here ({exc.name or exc})"}
    folder = Path(__file__).resolve().parents[2] / "shared" / "data" / "mmdet_reference"
    image = folder / "input_0.png"
    mm_model = init_detector(str(folder / "cascade_r18_tiny.py"), str(folder / "cascade_r18_tiny.pth"), device="cpu")
    inference_detector(mm_model, str(image))
    start = time.perf_counter()
    for _ in range(iters):
        inference_detector(mm_model, str(image))
    mm_seconds = (time.perf_counter() - start) / iters
    detector = Detector(folder / "cascade_r18_tiny.pth", device="cpu", stain_normalize=False, batch_size=1)
    from PIL import Image

    slide = ArraySlide(np.array(Image.open(image).convert("RGB")))
    detector.detect(slide)
    start = time.perf_counter()
    for _ in range(iters):
        detector.detect(slide)
    ours_seconds = (time.perf_counter() - start) / iters
    return {"available": True, "model": "cascade_r18_tiny (CPU, one 512 px tile)", "mmdet_s": mm_seconds,
            "ours_s": ours_seconds, "speedup_vs_mmdet": mm_seconds / ours_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available, else cpu)")
    parser.add_argument("--configs", nargs="+", default=["r50", "x101-64x4d"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--iters", type=int, default=None, help="timed iterations (default 1 on CPU, 20 on CUDA)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch (default 2)")
    parser.add_argument("--view", action="store_true", help="also time a 1920 × 1080 view on CPU (always on CUDA)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = choose_device(args.device)
    iters = args.iters or (20 if device.type == "cuda" else 1)
    report: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({args.threads} threads)",
        "torch": torch.__version__, "python": platform.python_version(), "tile": TILE, "iters": iters,
        "weights": "random", "results": {},
    }
    if hasattr(os, "getloadavg"):
        report["load_average_1min_at_start"] = os.getloadavg()[0]
    for name in args.configs:
        torch.manual_seed(0)
        model = build_cascade_rcnn(CascadeConfig.named(name)).eval().to(device)
        entry: dict = {}
        precisions = [False, True] if device.type == "cuda" else [False]
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        for amp in precisions:
            key = "amp_fp16" if amp else "fp32"
            if device.type != "cuda":  # one warm-up with a single tile is enough on a CPU
                tiles_per_second(model, device, 1, 1, amp, warm_up=False)
            figures = {
                f"batch_{b}": tiles_per_second(model, device, b, iters, amp, warm_up=device.type == "cuda")
                for b in args.batches
            }
            base = figures[f"batch_{args.batches[0]}"]
            entry[key] = {
                "tiles_per_s": figures,
                f"speedup_vs_batch_{args.batches[0]}": {k: v / base for k, v in figures.items()},
            }
        if device.type == "cuda":
            entry["amp_speedup_vs_fp32"] = {
                k: entry["amp_fp16"]["tiles_per_s"][k] / entry["fp32"]["tiles_per_s"][k] for k in entry["fp32"]["tiles_per_s"]
            }
        if device.type == "cuda" or args.view:
            detector = Detector.from_model(model, device=str(device), score_thr=0.5)
            entry["view_1920x1080"] = {
                "tiles": 15,
                "batch_size": detector.batch_size,
                "seconds_with_stain": view_latency(detector, iters, stain=True),
                "seconds_without_stain": view_latency(detector, iters, stain=False),
            }
        report["results"][name] = entry
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    report["mmdet"] = mmdet_comparison(iters)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
