"""``midog-viewer detect`` writes p_atypical for each mitotic figure (JSON and CSV), or not with --no-atypical."""

from __future__ import annotations

import csv
import json

from midog_viewer.cli import main


def test_detect_writes_p_atypical_for_mitotic_figures_only(shared_data, tiny_run, tmp_path, capsys):
    tile = str(shared_data / "tiles" / "stardist_histo.jpg")
    common = ["detect", tile, "--region", "0,0,256,256", "--score-thr", "0", "--no-stain", "--device", "cpu",
              "--atypical-model", str(tiny_run.model_path)]
    out = tmp_path / "dets.json"
    assert main([*common, "--out", str(out)]) == 0, capsys.readouterr().err
    document = json.loads(out.read_text())
    assert document["atypical_threshold"] == tiny_run.threshold
    detections = document["detections"]
    assert detections and any(d["label"] == "mitotic figure" for d in detections)
    for d in detections:
        if d["label"] == "mitotic figure":
            assert 0.0 <= d["p_atypical"] <= 1.0
        else:
            assert d["p_atypical"] is None
    out_csv = tmp_path / "dets.csv"
    assert main([*common, "--out", str(out_csv)]) == 0
    with out_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["p_atypical"] == "" for r in rows] == [d["p_atypical"] is None for d in detections]
    bare = tmp_path / "bare.json"
    assert main([*common, "--no-atypical", "--out", str(bare)]) == 0
    plain = json.loads(bare.read_text())
    assert "atypical_threshold" not in plain and all("p_atypical" not in d for d in plain["detections"])


def test_a_bad_atypical_model_fails_before_detecting(shared_data, tmp_path, capsys):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"junk")
    out = tmp_path / "d.json"
    status = main(["detect", str(shared_data / "tiles" / "stardist_histo.jpg"), "--atypical-model", str(junk),
                   "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 2 and "cannot read" in err and "tiles" not in err and not out.exists()
