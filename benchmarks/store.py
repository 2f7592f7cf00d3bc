"""Review-store speed: decisions per second and per-decision latency, MIDOG++.json import, counts over 100,000 detections.

Prints one JSON object. Each figure comes with a baseline measured in the same run:

* decisions: ``decide`` (log row + state row, one transaction) at ``durability="normal"`` and ``"full"``,
  against a bare one-row INSERT + COMMIT in SQLite's default rollback-journal mode;
* import: ``import_file`` of MIDOG++.json into a fresh store, against ``json.load`` of the same file;
* counts: ``count_slide`` over 100,000 detections (grid + hotspot), against fetching them with
  ``objects()``; plus one viewport query (``objects(region=…)``), as the GUI does on every pan.

Targets (issue #4): a decision stored in ≤ 10 ms; MIDOG++.json imported in ≤ 5 s.

    python benchmarks/store.py [--decisions 500] [--detections 100000]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from midog_viewer.review.importing import import_file
from midog_viewer.review import ReviewStore
from midog_viewer.review.counts import count_slide

MIDOG_PP = Path(__file__).resolve().parents[2] / "shared" / "data" / "annotations" / "MIDOG++.json"


def _latency_summary(seconds: list[float]) -> dict:
    ms = sorted(s * 1000 for s in seconds)
    return {
        "decisions_per_s": round(len(ms) / (sum(ms) / 1000), 1),
        "median_ms": round(statistics.median(ms), 3),
        "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 3),
        "p99_ms": round(ms[int(0.99 * (len(ms) - 1))], 3),
        "max_ms": round(ms[-1], 3),
    }


def bench_decisions(folder: Path, n: int, durability: str) -> dict:
    with ReviewStore(folder / f"decisions-{durability}.db", reviewer="bench", durability=durability) as store:
        slide_id = store.add_slide("bench.tiff", 0.25, 100_000, 100_000)
        run = store.add_detection_run(slide_id, "bench", {})
        boxes = np.array([[i * 60.0, 0, i * 60.0 + 50, 50] for i in range(1000)])
        ids = store.add_detections(run, boxes, np.full(1000, 0.9), ["mitotic figure"] * 1000).tolist()
        times = []
        for i in range(n):
            start = time.perf_counter()
            store.decide(ids[i % len(ids)], ("accept", "reject")[i % 2])
            times.append(time.perf_counter() - start)
    return _latency_summary(times)


def bench_bare_insert(folder: Path, n: int) -> dict:
    db = sqlite3.connect(folder / "bare.db", isolation_level=None)
    db.execute("CREATE TABLE log (id INTEGER PRIMARY KEY, object INTEGER, verdict TEXT, at TEXT)")
    times = []
    for i in range(n):
        start = time.perf_counter()
        db.execute("BEGIN")
        db.execute("INSERT INTO log(object, verdict, at) VALUES (?, ?, ?)", (i, "accept", "now"))
        db.execute("COMMIT")
        times.append(time.perf_counter() - start)
    db.close()
    return _latency_summary(times)


def bench_import(folder: Path) -> dict:
    if not MIDOG_PP.is_file():
        return {"skipped": f"{MIDOG_PP} not found"}
    start = time.perf_counter()
    with MIDOG_PP.open() as handle:
        json.load(handle)
    parse_s = time.perf_counter() - start
    with ReviewStore(folder / "import.db", reviewer="bench") as store:
        start = time.perf_counter()
        summary = import_file(store, MIDOG_PP)
        import_s = time.perf_counter() - start
    return {"import_s": round(import_s, 3), "baseline_json_load_s": round(parse_s, 3),
            "annotations": sum(summary.classes.values()), "target_s": 5.0, "meets_target": import_s <= 5.0}


def bench_counts(folder: Path, n: int) -> dict:
    rng = np.random.default_rng(0)
    with ReviewStore(folder / "counts.db", reviewer="bench") as store:
        slide_id = store.add_slide("big.svs", 0.25, 100_000, 80_000)
        run = store.add_detection_run(slide_id, "bench", {})
        xy = rng.uniform(0, [100_000 - 50, 80_000 - 50], size=(n, 2))
        boxes = np.hstack([xy, xy + 50])
        start = time.perf_counter()
        ids = store.add_detections(run, boxes, rng.uniform(0.3, 1, n), ["mitotic figure"] * n)
        insert_s = time.perf_counter() - start
        for i in range(0, 2000, 2):
            store.decide(int(ids[i]), "accept")
            store.decide(int(ids[i + 1]), "reject")
        start = time.perf_counter()
        table = store.objects(slide_id)
        fetch_s = time.perf_counter() - start
        start = time.perf_counter()
        counts = count_slide(store, slide_id, count_pending=True)
        counts_s = time.perf_counter() - start
        region_times = []
        for _ in range(7):
            start = time.perf_counter()
            viewport = store.objects(slide_id, region=(40_000, 30_000, 4000, 3000))
            region_times.append(time.perf_counter() - start)
        region_s = statistics.median(region_times)
    return {
        "detections": len(table), "insert_s": round(insert_s, 3), "counts_s": round(counts_s, 3),
        "baseline_objects_fetch_s": round(fetch_s, 3), "hpf_fields": len(counts.fields),
        "viewport_query_median_ms": round(region_s * 1000, 2), "viewport_objects": len(viewport),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=500)
    parser.add_argument("--detections", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        normal = bench_decisions(folder, args.decisions, "normal")
        full = bench_decisions(folder, args.decisions, "full")
        result = {
            "decisions": {
                "store_normal": normal, "store_full": full, "baseline_bare_insert_rollback_journal": bench_bare_insert(folder, args.decisions),
                "target_ms": 10.0, "meets_target_p99": normal["p99_ms"] <= 10.0,
            },
            "import_midog_pp": bench_import(folder),
            "counts": bench_counts(folder, args.detections),
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
