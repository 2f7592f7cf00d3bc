"""The import, export, counts and evaluate sub-commands."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from midog_viewer.cli import main
from midog_viewer.review import ReviewStore


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_evaluate_reproduces_the_organisers_fixture(shared_data, capsys, tmp_path):
    fixture = shared_data / "midog_eval_fixture"
    code, out, err = run(capsys, "evaluate", "--gt", fixture / "ground_truth/ground_truth.json",
                         "--pred", fixture / "test/input", "--json", "--metrics", tmp_path / "m.json",
                         "--cases-csv", tmp_path / "cases.csv", "--curve-csv", tmp_path / "curve.csv",
                         "--pr-png", tmp_path / "pr.png")
    assert code == 0, err
    result = json.loads(out)
    expected = json.loads((fixture / "test/output/metrics.json").read_text())
    assert result["f1"] == expected["aggregates"]["f1_score"] and round(result["f1"], 4) == 0.4615
    assert (result["tp"], result["fp"], result["fn"]) == (3, 3, 4)
    assert result["cases"] == {
        r["image"]: {"tp": r["metrics"]["true_positives"], "fp": r["metrics"]["false_positives"],
                     "fn": r["metrics"]["false_negatives"]} for r in expected["results"]}
    assert json.loads((tmp_path / "m.json").read_text())["aggregates"] == expected["aggregates"]
    assert len(list(csv.DictReader((tmp_path / "cases.csv").open()))) == 3
    assert (tmp_path / "pr.png").stat().st_size > 1000


def test_evaluate_takes_a_case_mapping_and_prints_a_summary(shared_data, capsys, tmp_path):
    fixture = shared_data / "midog_eval_fixture"
    mapping = {"140.tiff": {"type": "Multiple points", "points": [
        {"name": "mitotic figure", "point": [0.701136862260162, 0.5339582751605569, 0], "probability": 0.85}]}}
    (tmp_path / "pred.json").write_text(json.dumps(mapping))
    code, out, _ = run(capsys, "evaluate", "--gt", fixture / "ground_truth/ground_truth.json", "--pred", tmp_path / "pred.json")
    assert code == 0
    assert "140.tiff: TP 1, FP 0, FN 2" in out and "cases without predictions" in out


def test_import_json_counts_and_export(shared_data, capsys, tmp_path):
    db = tmp_path / "r.db"
    code, out, err = run(capsys, "import", shared_data / "annotations/MIDOG.json", "--db", db, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["images"] == 150 and summary["classes"] == {"mitotic figure": 1721, "hard negative": 2714}
    code, out, err = run(capsys, "counts", "--db", db, "--slide", "007.tiff", "--json", "--csv", tmp_path / "c.csv")
    assert code == 0, err
    counts = json.loads(out)["slides"][0]
    assert counts["totals"]["ground_truth"] == counts["totals"]["mitoses"] > 0
    assert "0.237/0.274" in counts["mitotic_score"]["scaling"]
    rows = list(csv.DictReader((tmp_path / "c.csv").open()))
    assert sum(int(r["mitoses"]) for r in rows) == counts["totals"]["mitoses"]
    code, out, _ = run(capsys, "counts", "--db", db, "--slide", "007.tiff", "--hpf-mm2", "0.5")
    assert code == 0 and "007.tiff:" in out and "per 10 HPF of 0.5 mm²" in out
    code, out, err = run(capsys, "export", "--db", db, "--format", "coco", "--out", tmp_path / "o.json")
    assert code == 0 and "4,435 objects of 200 slides" in out
    code, out, _ = run(capsys, "import", tmp_path / "o.json", "--db", tmp_path / "again.db")
    assert code == 0 and "1,721 mitotic figure" in out and "2,714 hard negative" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["import", "{tmp}/missing.json", "--db", "{tmp}/r.db"],
        ["import", "{tmp}/bad.json", "--db", "{tmp}/r.db"],
        ["counts", "--db", "{tmp}/r.db", "--slide", "nope.tiff"],
        ["counts", "--db", "{tmp}/typo.db"],
        ["export", "--db", "{tmp}/notadb.db", "--format", "csv", "--out", "{tmp}/x.csv"],
        ["evaluate", "--gt", "{tmp}/bad.json", "--pred", "{tmp}/bad.json"],
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, argv):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "notadb.db").write_bytes(b"x" * 4096)
    ReviewStore(tmp_path / "r.db").close()
    code, out, err = run(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert code == 2
    assert err.startswith("midog-viewer: error: ") and err.count("\n") == 1
    assert not (tmp_path / "typo.db").exists()  # read-only commands never create a database


def test_help_lists_the_review_commands():
    out = subprocess.run([sys.executable, "-m", "midog_viewer", "--help"], capture_output=True, text=True, timeout=120).stdout
    for command in ("import", "export", "counts", "evaluate"):
        assert command in out


def test_a_failed_import_into_a_new_database_leaves_none_and_an_old_one_unchanged(capsys, tmp_path):
    (tmp_path / "bad.json").write_text('{"images": [{"id": 1, "file_name": "a.tiff"}], "annotations": '
                                       '[{"id": 1, "image_id": 1, "bbox": "x", "category_id": 1}], '
                                       '"categories": [{"id": 1, "name": "mitotic figure"}]}')
    code, _, err = run(capsys, "import", str(tmp_path / "bad.json"), "--db", str(tmp_path / "new.db"))
    assert code == 2 and "bbox" in err
    assert not any(p.name.startswith("new.db") for p in tmp_path.iterdir())

    with ReviewStore(tmp_path / "old.db") as store:
        store.add_slide("a.tiff", mpp=0.25, width=100, height=100)
    code, _, _ = run(capsys, "import", str(tmp_path / "bad.json"), "--db", str(tmp_path / "old.db"))
    assert code == 2
    with ReviewStore(tmp_path / "old.db") as store:
        assert [slide.name for slide in store.slides()] == ["a.tiff"] and store.integrity_check() == "ok"


def _review_db(path):
    """One slide: 8 imported mitoses, 2 detections accepted on two of them, 4 candidates (0.12-0.9) pending."""
    import numpy as np

    def box(x, y):
        return [x - 25, y - 25, x + 25, y + 25]

    with ReviewStore(path, reviewer="t") as store:
        slide = store.add_slide("s.tiff", 0.25, 20_000, 20_000)
        truth = [(1000 + 700 * i, 1000 + 300 * i) for i in range(8)]
        store.add_annotations(slide, np.array([box(*c) for c in truth]), ["mitotic figure"] * 8, "MIDOG.json")
        run_id = store.add_detection_run(slide, "m", {"score_thr": 0.1})
        on_truth = store.add_detections(run_id, np.array([box(x + 8, y) for x, y in truth[:2]]), [0.9, 0.9],
                                        ["mitotic figure"] * 2)
        for object_id in on_truth:
            store.decide(int(object_id), "accept")
        store.add_detections(run_id, np.array([box(15_000 + 500 * i, 15_000) for i in range(4)]),
                             [0.12, 0.3, 0.6, 0.9], ["mitotic figure"] * 4)


def test_counts_give_distinct_mitoses_and_pending_at_the_operating_threshold(capsys, tmp_path):
    _review_db(tmp_path / "r.db")
    code, out, err = run(capsys, "counts", "--db", tmp_path / "r.db", "--json", "--csv", tmp_path / "c.csv")
    assert code == 0, err
    totals = json.loads(out)["slides"][0]["totals"]
    assert (totals["mitoses"], totals["ground_truth"], totals["accepted"], totals["pending"]) == (8, 8, 0, 2)
    assert sum(int(r["pending"]) for r in csv.DictReader((tmp_path / "c.csv").open())) == 2
    code, out, _ = run(capsys, "counts", "--db", tmp_path / "r.db", "--include-pending")
    assert code == 0 and "s.tiff: 10 mitoses" in out and "pending 2 (score >= 0.5)" in out  # was 12: down to 0.10
    code, out, _ = run(capsys, "counts", "--db", tmp_path / "r.db", "--include-pending", "--score-thr", "0.25", "--json")
    assert code == 0 and json.loads(out)["slides"][0]["totals"]["mitoses"] == 11
    with pytest.raises(SystemExit) as exit_info:  # argparse refuses it
        main(["counts", "--db", str(tmp_path / "r.db"), "--score-thr", "1.5"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("midog-viewer: error: ") and err.count("\n") == 1


def test_importing_the_same_labels_in_another_format_adds_none_and_says_so(shared_data, capsys, tmp_path):
    db = tmp_path / "r.db"
    assert run(capsys, "import", shared_data / "annotations/MIDOG.json", "--db", db)[0] == 0
    code, before, _ = run(capsys, "counts", "--db", db, "--slide", "002.tiff", "--json")
    code, out, err = run(capsys, "import", shared_data / "annotations/MIDOG.sqlite", "--db", db)
    assert code == 0, err
    assert "no new labels; skipped 4,435 already in the store" in out  # was: 1,721 mitoses added again
    assert run(capsys, "counts", "--db", db, "--slide", "002.tiff", "--json")[1] == before
