"""`midog-viewer counts` shows atypical mitoses: printed, in --json and in the CSV."""

from __future__ import annotations

import csv
import json

import numpy as np

from midog_viewer.cli import main
from midog_viewer.review import ReviewStore


def test_counts_print_and_write_atypical_mitoses(capsys, tmp_path):
    db = tmp_path / "r.db"
    with ReviewStore(db, reviewer="t") as store:
        slide = store.add_slide("s.tiff", 0.25, 4000, 3000)
        run = store.add_detection_run(slide, "m", {"operating_thr": 0.5}, atypical_threshold=0.5)
        boxes = np.array([[100 + 500 * i, 100, 150 + 500 * i, 150] for i in range(4)], float)
        for i in store.add_detections(run, boxes, [0.9] * 4, ["mitotic figure"] * 4, [0.9, 0.7, 0.2, 0.1]):
            store.decide(int(i), "accept")
    assert main(["counts", "--db", str(db), "--json", "--csv", str(tmp_path / "c.csv")]) == 0
    counts = json.loads(capsys.readouterr().out)["slides"][0]
    assert counts["totals"]["atypical"] == 2 and counts["atypical_share"] == 0.5
    assert counts["atypical_per_10_hpf"] == 10 * counts["atypical_per_hpf"] > 0
    assert sum(int(r["atypical"]) for r in csv.DictReader((tmp_path / "c.csv").open())) == 2
    assert main(["counts", "--db", str(db)]) == 0
    assert "atypical: 2 of 4 mitoses (50%)" in capsys.readouterr().out
