"""``midog-viewer detect``: JSON/CSV output, the mmdet model end to end, and one-line errors with exit 2."""

from __future__ import annotations

import csv
import json

import pytest

from midog_viewer.cli import main


def test_json_output_reproduces_mmdet_on_a_512_tile(shared_data, tmp_path, capsys):
    folder = shared_data / "mmdet_reference"
    out = tmp_path / "dets.json"
    status = main(["detect", str(folder / "input_0.png"), "--model", str(folder / "cascade_r18_tiny.pth"),
                   "--config", str(folder / "cascade_r18_tiny.py"), "--no-stain", "--device", "cpu",
                   "--score-thr", "0.3", "--out", str(out)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "1/1 tiles" in captured.err
    document = json.loads(out.read_text())
    assert set(document) == {"slide", "model", "resample_zoom", "second_look_px", "tissue_fraction", "detections",
                             "atypical_model", "atypical_threshold"}
    assert document["resample_zoom"] == 1.0  # a PNG has no pixel spacing: tiles are used as read
    assert document["second_look_px"] is None  # an mmdet model has no second look
    expected = json.loads((folder / "reference_outputs.json").read_text())["images"][0]["pred_instances"]
    names = ("mitotic figure", "hard negative")
    wanted = [(box, score, names[label]) for box, score, label in
              zip(expected["bboxes"], expected["scores"], expected["labels"]) if score >= 0.3]
    assert len(document["detections"]) == len(wanted) > 0
    for found, (box, score, label) in zip(document["detections"], wanted):
        assert set(found) == {"x1", "y1", "x2", "y2", "score", "label", "p_atypical"}
        assert [found[k] for k in ("x1", "y1", "x2", "y2")] == pytest.approx(box, abs=0.01)
        assert found["score"] == pytest.approx(score, abs=1e-4)
        assert found["label"] == label


def test_csv_output_with_a_region(shared_data, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "dets.csv"
    status = main(["detect", str(shared_data / "tiles" / "stardist_histo.jpg"), "--model", str(tiny_checkpoint),
                   "--region", "100,50,300,200", "--score-thr", "0", "--batch-size", "2", "--out", str(out)])
    assert status == 0, capsys.readouterr().err
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert out.read_text().splitlines()[0] == "x1,y1,x2,y2,score,label,p_atypical"
    for row in rows:
        assert 100 <= float(row["x1"]) <= float(row["x2"]) <= 400
        assert row["label"] in ("mitotic figure", "hard negative")


def test_a_20x_tiff_is_resampled_to_the_models_spacing_and_says_so(tiny_checkpoint, tmp_path, capsys):
    import numpy as np
    import tifffile

    slide = tmp_path / "twenty_x.tif"
    pixels = np.full((300, 400, 3), 230, np.uint8)
    tifffile.imwrite(slide, pixels, photometric="rgb", resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    out = tmp_path / "dets.json"
    status = main(["detect", str(slide), "--model", str(tiny_checkpoint), "--device", "cpu", "--out", str(out)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "slide at 0.500 µm/px, model at 0.250 µm/px: tiles resampled x2.00" in captured.err
    assert "4/4 tiles" in captured.err  # 400 x 300 px in 256 px tiles (512 px for the model): 2 x 2
    assert json.loads(out.read_text())["resample_zoom"] == 2.0
    status = main(["detect", str(slide), "--model", str(tiny_checkpoint), "--device", "cpu", "--no-resample",
                   "--out", str(out)])
    assert status == 0 and "1/1 tiles" in capsys.readouterr().err
    assert json.loads(out.read_text())["resample_zoom"] == 1.0


def test_an_image_without_a_pixel_spacing_says_how_it_is_read_and_takes_mpp(tiny_checkpoint, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    frame = tmp_path / "frame.png"  # a PNG frame records no µm/px
    Image.fromarray(np.full((300, 400, 3), 230, np.uint8)).save(frame)
    out = tmp_path / "dets.json"
    assert main(["detect", str(frame), "--model", str(tiny_checkpoint), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "frame.png records no pixel spacing: read at the model's 0.250 µm/px; give --mpp" in err
    assert json.loads(out.read_text())["resample_zoom"] == 1.0
    assert main(["detect", str(frame), "--model", str(tiny_checkpoint), "--mpp", "0.5", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "records no pixel spacing" not in err and "tiles resampled x2.00" in err and "4/4 tiles" in err
    assert json.loads(out.read_text())["resample_zoom"] == 2.0


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("bad-model", "cannot read"),
        ("region-outside", "outside the slide"),
        ("region-malformed", "four integers"),
        ("non-rgb", ""),
        ("bad-extension", ".json or .csv"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(case, message, shared_data, tiny_checkpoint, tmp_path, capsys):
    slide = str(shared_data / "tiles" / "stardist_histo.jpg")
    args = ["detect", slide, "--model", str(tiny_checkpoint), "--out", str(tmp_path / "o.json")]
    if case == "bad-model":
        junk = tmp_path / "junk.safetensors"
        junk.write_bytes(b"not a model")
        args[3] = str(junk)
    elif case == "region-outside":
        args += ["--region", "5000,5000,100,100"]
    elif case == "region-malformed":
        args += ["--region", "1,2,3"]
    elif case == "non-rgb":
        args[1] = str(shared_data / "slides" / "smalltif.tif")
    elif case == "bad-extension":
        args[-1] = str(tmp_path / "o.txt")
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("midog-viewer: error:")
    assert message in err
    assert not (tmp_path / "o.json").exists()
