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
