"""count_slide with the one-cell merge (``merge_within_radius``) on a slide of many candidates.

Baseline: reading the slide's objects (``store.objects``), which every count needs; the figure is the
whole ``count_slide`` (objects, merge, fields, hotspot) and its ratio to the baseline, with and without
pending candidates counted. Prints one JSON document.

    python benchmarks/counts.py                 # 20,000 candidates on a 100,000 x 80,000 px slide
    python benchmarks/counts.py --objects 100000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from midog_viewer.review import ReviewStore  # noqa: E402
from midog_viewer.review.counts import count_slide  # noqa: E402


def _best_of(repeats: int, call) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, ReviewStore(Path(folder) / "b.db", reviewer="bench") as store:
        slide = store.add_slide("big.tiff", 0.25, 100_000, 80_000)
        run = store.add_detection_run(slide, "m", {"operating_thr": 0.5})
        rng = np.random.default_rng(0)
        centres = rng.uniform(0, 80_000, (args.objects, 2))
        store.add_detections(run, np.hstack([centres - 25, centres + 25]), rng.uniform(0.5, 1, args.objects),
                             ["mitotic figure"] * args.objects)
        baseline = _best_of(args.repeats, lambda: store.objects(slide))
        result = {"objects": args.objects, "baseline_objects_s": round(baseline, 4)}
        for pending in (False, True):
            seconds = _best_of(args.repeats, lambda: count_slide(store, slide, count_pending=pending))
            result[f"count_slide_pending_{pending}_s".lower()] = round(seconds, 4)
            result[f"ratio_pending_{pending}".lower()] = round(seconds / baseline, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
