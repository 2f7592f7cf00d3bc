"""Crop data sets: a folder of patches with a CSV of centres trains through the product's own path."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from midog_viewer.errors import TrainingError
from midog_viewer.train.data import DataSpec, gather
from midog_viewer.train.patches import PatchDataset
from midog_viewer.train.sources import LabelledImage
from midog_viewer.train.splits import split_by_slide
from midog_viewer.train.points import MIDOG_BOX_UM, images_from_points


def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _crops(folder: Path, names: list[str], size: int = 64) -> None:
    rng = np.random.default_rng(0)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / name)


@pytest.fixture
def crop_set(tmp_path):
    images = tmp_path / "crops"
    names = [f"s{slide}/c{i}.png" for slide in range(4) for i in range(3)] + ["bg/empty.png"]
    _crops(images, names)
    table = _write_csv(
        tmp_path / "images.csv",
        ["file", "source", "slide", "mpp", "width", "height"],
        [[n, "lab A", n.split("/")[0], 0.5 if n.startswith("s0") else "", 64, 64] for n in names],
    )
    points = _write_csv(
        tmp_path / "objects.csv",
        ["file", "x", "y", "label"],
        [[n, 32, 32, "mitotic figure"] for n in names[:-1]] + [["s1/c0.png", 10, 50, "not mitotic figure"]],
    )
    return images, table, points


def test_points_become_boxes_of_the_midog_size_at_each_spacing(crop_set):
    images_dir, table, points = crop_set
    records = {im.key: im for im in images_from_points(points, images_dir, table)}
    assert len(records) == 13
    half_20x, half_40x = MIDOG_BOX_UM / 0.5 / 2, MIDOG_BOX_UM / 0.25 / 2
    np.testing.assert_allclose(records["s0/c0.png"].boxes[0], [32 - half_20x, 32 - half_20x, 32 + half_20x, 32 + half_20x])
    np.testing.assert_allclose(records["s2/c0.png"].boxes[0, 2] - records["s2/c0.png"].boxes[0, 0], 2 * half_40x)
    assert records["s1/c0.png"].labels.tolist() == [0, 1]
    assert records["bg/empty.png"].n_mitoses == 0 and len(records["bg/empty.png"].boxes) == 0
    assert records["s3/c1.png"].slide == "s3" and records["s3/c1.png"].source == "lab A"
    assert records["s3/c1.png"].pixels.shape == (64, 64, 3)  # crops are held in memory


def test_without_an_image_table_every_image_in_the_folder_is_used(crop_set):
    images_dir, _, points = crop_set
    records = images_from_points(points, images_dir)
    assert {im.key for im in records} >= {"bg/empty.png", "s0/c0.png"} and len(records) == 13


def test_background_images_are_trained_on(crop_set):
    images_dir, table, points = crop_set
    records = images_from_points(points, images_dir, table)
    dataset = PatchDataset(records, 512)
    background = next(i for i, im in enumerate(records) if im.key == "bg/empty.png")
    assert (background, -1) in dataset.index
    image, target = dataset[dataset.index.index((background, -1))]
    assert tuple(image.shape) == (3, 64, 64) and len(target["boxes"]) == 0


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([["missing.png", 5, 5, "mitotic figure"]], "not in the image table"),
        ([["s0/c0.png", 80, 5, "mitotic figure"]], "outside the 64 × 64 image"),
        ([["s0/c0.png", 5, 5, "lymphocyte"]], "unknown class 'lymphocyte'"),
        ([["s0/c0.png", "a", 5, "mitotic figure"]], "x and y must be numbers"),
        ([["../../etc/passwd", 5, 5, "mitotic figure"]], "not in the image table"),
    ],
)
def test_bad_rows_are_refused_before_training(crop_set, tmp_path, rows, message):
    images_dir, table, _ = crop_set
    points = _write_csv(tmp_path / "bad.csv", ["file", "x", "y", "label"], rows)
    with pytest.raises(TrainingError, match=message):
        images_from_points(points, images_dir, table)


@pytest.mark.parametrize("mpp", ["0", "-0.25", "nan", "inf", "abc"])
def test_a_spacing_that_is_not_positive_is_refused(crop_set, tmp_path, mpp):
    images_dir, _, _ = crop_set
    points = _write_csv(tmp_path / "p.csv", ["file", "x", "y", "label", "mpp"], [["s0/c0.png", 5, 5, "mitosis", mpp]])
    with pytest.raises(TrainingError, match="pixel spacing"):
        images_from_points(points, images_dir)


def test_a_missing_image_and_names_outside_the_folder_are_refused(crop_set, tmp_path):
    images_dir, _, _ = crop_set
    for name, message in [("nowhere.png", "image not found"), ("../crops/s0/c0.png", "inside the image folder"),
                          (str(images_dir / "s0/c0.png"), "inside the image folder")]:
        points = _write_csv(tmp_path / "p.csv", ["image", "x", "y", "class"], [[name, 5, 5, "mitosis"]])
        with pytest.raises(TrainingError, match=message):
            images_from_points(points, images_dir)


def _image(key: str, slide: str, source: str = "", mitoses: int = 1) -> LabelledImage:
    boxes = np.array([[10, 10, 60, 60]] * mitoses, dtype=np.float32).reshape(-1, 4)
    return LabelledImage(key, boxes, np.zeros(mitoses, np.int64), 128, 128, 0.25, slide=slide, source=source)


def test_split_by_slide_keeps_each_slide_on_one_side_within_every_source():
    images = [_image(f"a{s}-{i}", f"{s}.tiff", "A") for s in range(10) for i in range(4)]
    images += [_image(f"b{s}-{i}", f"{s}", "B") for s in range(5) for i in range(2)]  # same slides, other names
    images += [_image(f"u{i}", "", "C") for i in range(30)]  # unknown slides: one group, too big for validation
    train, val = split_by_slide(images, 0.2, seed=3)
    assert split_by_slide(images, 0.2, seed=3) == (train, val)
    slide_of = lambda im: (im.slide.split(".")[0] or im.source)  # noqa: E731
    assert not {slide_of(im) for im in train} & {slide_of(im) for im in val}
    assert {im.source for im in val} >= {"A"} and all(im.source != "C" for im in val)
    assert 0.1 < sum(im.source == "A" for im in val) / 40 < 0.4


def test_one_slide_group_cannot_be_split():
    with pytest.raises(TrainingError, match="slide column"):
        split_by_slide([_image(f"u{i}", "") for i in range(5)])


def test_gather_splits_points_by_slide(crop_set):
    images_dir, table, points = crop_set
    split = gather(DataSpec(points=str(points), images=str(images_dir), image_table=str(table), val_fraction=0.25))
    assert not {im.slide for im in split.train} & {im.slide for im in split.val}
    assert split.summary()["train_images"] + split.summary()["val_images"] == 13
    with pytest.raises(TrainingError, match="--points needs --images"):
        gather(DataSpec(points=str(points)))
    with pytest.raises(TrainingError, match="--image-table describes"):
        gather(DataSpec(coco="x.json", images=str(images_dir), image_table=str(table)))


def test_real_crop_data_set_loads_and_splits_by_slide(shared_data):
    root = shared_data / "real_mitosis"
    split = gather(DataSpec(points=str(root / "objects.csv"), images=str(root), image_table=str(root / "images.csv")))
    summary = split.summary()
    assert summary["train_images"] + summary["val_images"] == 6451
    assert summary["train_mitoses"] + summary["val_mitoses"] == 5706
    groups = lambda images: {(im.source if not im.slide else "") + im.slide.split(".")[0].lower() for im in images}  # noqa: E731
    assert not groups(split.train) & groups(split.val)
    assert {im.source for im in split.val} >= {"AMi-Br/MIDOG21", "AMi-Br/TUPAC16", "MITOS-ATYPIA-14"}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([["nowhere.png", 5, 5, "mitosis"]], "image not found"),
        ([["s0/c0.png", 500, 5, "mitosis"]], "outside the 64 × 64 image"),
        ([["s0/c0.png", 5, 5, "eosinophil"]], "unknown class"),
        ([["s0/c0.png", 5, 5, "mitosis", "-0.25"]], "pixel spacing"),
    ],
)
def test_the_train_command_refuses_bad_points_in_one_line_before_training(crop_set, tmp_path, capsys, rows, message):
    from midog_viewer.cli import main

    images_dir, _, _ = crop_set
    points = _write_csv(tmp_path / "bad.csv", ["file", "x", "y", "label", "mpp"], [r + [""] * (5 - len(r)) for r in rows])
    code = main(["train", "--points", str(points), "--images", str(images_dir), "--config", "tiny",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and message in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("repeat", "message"),
    [
        ("lab B=3", "no training image is of source 'lab B' to repeat; the sources are: 'lab A'"),
        ("lab A", "--repeat takes SOURCE=K"),
        ("lab A=many", "--repeat takes SOURCE=K"),
        ("lab A=0", "a source's repeats must be a whole number in 1-100"),
    ],
)
def test_the_train_command_refuses_a_bad_source_repeat_before_training(crop_set, tmp_path, capsys, repeat, message):
    from midog_viewer.cli import main

    images_dir, table, points = crop_set
    code = main(["train", "--points", str(points), "--image-table", str(table), "--images", str(images_dir),
                 "--config", "tiny", "--repeat", repeat, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and message in err
    assert not (tmp_path / "run").exists()


def test_lab_transfer_trains_on_the_spread_it_measured_and_a_resume_keeps_it(crop_set, tmp_path):
    """--lab-transfer measures the training crops' LAB spread once, records it with the run, and a resumed
    run draws from the recorded spread rather than measuring anew."""
    import json

    from midog_viewer.cli import main
    from midog_viewer.train import read_progress

    images_dir, table, points = crop_set
    out = tmp_path / "run"
    fast = ["--config", "tiny", "--mosaic", "256", "--rcnn-samples", "16", "--batch-size", "1", "--warmup-steps", "1",
            "--val-fraction", "0.25", "--quiet", "--json"]
    assert main(["train", "--points", str(points), "--image-table", str(table), "--images", str(images_dir),
                 *fast, "--epochs", "1", "--lab-transfer", "1", "--out", str(out)]) == 0
    recorded = json.loads((out / "run.json").read_text())["recipe"]
    assert recorded["lab_transfer_probability"] == 1.0
    assert set(recorded["lab_spread"]) == {"mean_of_means", "std_of_means", "mean_of_stds", "std_of_stds"}
    assert recorded["lab_spread"]["std_of_means"][0] > 0  # random crops differ from one another
    recorded["lab_spread"]["mean_of_means"] = [40.0, 10.0, -5.0]  # the resume must use this, not re-measure
    (out / "run.json").write_text(json.dumps({**json.loads((out / "run.json").read_text()), "recipe": recorded}))
    assert main(["train", "--resume", str(out), "--epochs", "2", "--quiet", "--json"]) == 0
    resumed = json.loads((out / "run.json").read_text())["recipe"]
    assert resumed["lab_spread"]["mean_of_means"] == [40.0, 10.0, -5.0] and resumed["epochs"] == 2
    losses = [e["loss"] for e in read_progress(out) if e["event"] == "step"]
    assert len(losses) >= 2 and all(np.isfinite(losses))


def test_a_second_look_is_validated_with_and_written_into_the_model(crop_set, tmp_path, monkeypatch):
    """--second-look PX: the epochs are judged with the second look the checkpoint then records, and a
    fine-tune of that checkpoint keeps it unless told otherwise."""
    from midog_viewer.cli import main
    from midog_viewer.detect import Detector
    from midog_viewer.detect.checkpoint import read_config

    looks = []
    built = Detector.from_model.__func__

    def recording(cls, *args, **kwargs):
        detector = built(cls, *args, **kwargs)
        looks.append(detector.second_look)
        return detector

    monkeypatch.setattr(Detector, "from_model", classmethod(recording))
    images_dir, table, points = crop_set
    data = ["--points", str(points), "--image-table", str(table), "--images", str(images_dir)]
    fast = ["--mosaic", "256", "--rcnn-samples", "16", "--batch-size", "1", "--warmup-steps", "1",
            "--val-fraction", "0.25", "--epochs", "1", "--quiet", "--json"]
    assert main(["train", *data, "--config", "tiny", *fast, "--second-look", "128", "--out", str(tmp_path / "a")]) == 0
    assert read_config(tmp_path / "a" / "last.safetensors").second_look_px == 128
    assert looks and all(look is not None and look.side == 128 for look in looks)

    looks.clear()
    assert main(["train", *data, "--init", str(tmp_path / "a" / "last.safetensors"), *fast,
                 "--out", str(tmp_path / "b")]) == 0
    assert read_config(tmp_path / "b" / "last.safetensors").second_look_px == 128
    assert main(["train", *data, "--init", str(tmp_path / "a" / "last.safetensors"), *fast, "--second-look", "0",
                 "--out", str(tmp_path / "c")]) == 0
    assert read_config(tmp_path / "c" / "last.safetensors").second_look_px == 0
