"""Training data: sources, MIDOG JSON quirks, split files, splitting by image and patches around labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from midog_viewer.errors import TrainingError
from midog_viewer.train.data import DataSpec, gather
from midog_viewer.train.patches import PatchDataset, boxes_in_window
from midog_viewer.train.sources import (
    LabelledImage,
    check_readable,
    images_from_coco,
    images_from_review_store,
    synthetic_images,
    training_label,
)
from midog_viewer.train.splits import apply_split, read_split_file, split_by_image


def test_coco_reads_midog_quirks(midog_dataset):
    images = images_from_coco(midog_dataset["json"], midog_dataset["images"])
    data = json.loads(midog_dataset["json"].read_text())
    first = next(a for a in data["annotations"] if a["image_id"] == 1)
    # bbox is [x1, y1, x2, y2] in MIDOG files, unlabelled images are left out, "not mitotic figure" is class 1.
    assert [im.key for im in images] == ["001.tiff", "002.tiff", "004.tiff"]
    np.testing.assert_allclose(images[0].boxes[0], first["bbox"])
    assert set(np.concatenate([im.labels for im in images]).tolist()) == {0, 1}
    assert images[0].boxes[0, 2] - images[0].boxes[0, 0] == pytest.approx(50, abs=1)


def test_coco_xywh_option_converts_boxes(tmp_path, midog_dataset):
    data = json.loads(midog_dataset["json"].read_text())
    for ann in data["annotations"]:
        x1, y1, x2, y2 = ann["bbox"]
        ann["bbox"] = [x1, y1, x2 - x1, y2 - y1]
    path = tmp_path / "coco_xywh.json"
    path.write_text(json.dumps(data))
    xyxy = images_from_coco(midog_dataset["json"], midog_dataset["images"])
    xywh = images_from_coco(path, midog_dataset["images"], bbox_format="xywh")
    np.testing.assert_allclose(xywh[0].boxes, xyxy[0].boxes)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"images": []}', 'no "categories" field'),
        (
            '{"images": [{"id": 1, "file_name": "a.tiff"}], "categories": [{"id": 1, "name": "mitotic figure"}],'
            ' "annotations": [{"bbox": [10, 10, 5, 5], "category_id": 1, "image_id": 1}]}',
            r"is not \[x1, y1, x2, y2\] \(is it COCO",
        ),
        (
            '{"images": [{"id": 1, "file_name": "a.tiff"}], "categories": [{"id": 1, "name": "mitotic figure"}],'
            ' "annotations": [{"bbox": [10, 10, 10, 15], "category_id": 1, "image_id": 1}]}',
            "empty box",
        ),
        (
            '{"images": [], "categories": [{"id": 1, "name": "mitotic figure"}],'
            ' "annotations": [{"bbox": [1, 1, 5, 5], "category_id": 1, "image_id": 7}]}',
            "image_id 7 names no image",
        ),
        (
            '{"images": [{"id": 1, "file_name": "../a.tiff"}], "categories": [{"id": 1, "name": "mitotic figure"}],'
            ' "annotations": [{"bbox": [1, 1, 5, 5], "category_id": 1, "image_id": 1}]}',
            "file names inside the image folder",
        ),
    ],
)
def test_coco_malformed_files_are_refused(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(TrainingError, match=message):
        images_from_coco(path, tmp_path)


def test_missing_and_unreadable_images_are_refused(tmp_path, midog_dataset):
    images = images_from_coco(midog_dataset["json"], midog_dataset["images"])
    (midog_dataset["images"] / "002.tiff").unlink()
    with pytest.raises(TrainingError, match="image not found: .*002.tiff"):
        check_readable(images)
    (midog_dataset["images"] / "002.tiff").write_bytes(b"this is not an image")
    with pytest.raises(TrainingError, match="cannot read training image .*002.tiff"):
        check_readable(images)


def test_check_readable_fills_size_and_pixel_spacing(midog_dataset):
    images = images_from_coco(midog_dataset["json"], midog_dataset["images"])
    for im in images:
        im.width = im.height = 0
    check_readable(images)
    assert (images[0].width, images[0].height) == (256, 256)
    assert images[0].mpp == pytest.approx(0.25)


def test_midog_2021_images_without_resolution_tags_train_at_the_scanners_pixel_size(tmp_path):
    # The one MIDOG COCO reader gives training the per-scanner table the import applies: 001-100 (Hamamatsu)
    # at 0.23 µm/px, 101-150 at 0.25, where the TIFF itself has no resolution tags.
    import tifffile

    from midog_viewer.io import open_slide

    images = tmp_path / "images"
    images.mkdir()
    names = ["001.tiff", "101.tiff"]
    for name in names:
        tifffile.imwrite(images / name, np.full((64, 64, 3), 200, np.uint8), photometric="rgb")
        with open_slide(images / name) as slide:
            assert slide.mpp is None  # no resolution tags
    coco = {
        "info": {"description": "MIDOG 2021 training set"},
        "images": [{"id": i + 1, "file_name": name, "width": 64, "height": 64} for i, name in enumerate(names)],
        "categories": [{"id": 1, "name": "mitotic figure"}],
        "annotations": [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [10, 10, 40, 40]}
                        for i in range(len(names))],
    }
    path = tmp_path / "MIDOG.json"
    path.write_text(json.dumps(coco))
    labelled = images_from_coco(path, images)
    check_readable(labelled)
    assert {im.key: im.mpp for im in labelled} == {"001.tiff": pytest.approx(0.23), "101.tiff": pytest.approx(0.25)}


def test_organisers_split_file(shared_data):
    split = read_split_file(shared_data / "annotations" / "train_val_split.txt")
    assert split["001.tiff"] == "train"
    assert set(split.values()) == {"train", "val"}
    # Every MIDOG 2021 labelled image (001-150) appears once, on one side.
    assert {f"{i:03d}.tiff" for i in range(1, 151)} <= set(split)
    assert 0.1 < sum(v == "val" for v in split.values()) / len(split) < 0.4


def test_split_file_also_reads_name_and_side_lines(tmp_path):
    path = tmp_path / "split.txt"
    path.write_text("a.tiff train\nb.tiff val\n")
    assert read_split_file(path) == {"a.tiff": "train", "b.tiff": "val"}
    path.write_text("just some text\n")
    with pytest.raises(TrainingError, match="names no image"):
        read_split_file(path)


def _image(key: str, labels: list[int]) -> LabelledImage:
    boxes = np.array([[10 + 60 * i, 10, 60 + 60 * i, 60] for i in range(len(labels))], dtype=np.float32)
    return LabelledImage(key=key, boxes=boxes, labels=np.array(labels), width=512, height=512, mpp=0.25,
                         pixels=np.full((512, 512, 3), 200, np.uint8))


def test_split_by_image_is_reproducible_and_disjoint():
    images = [_image(f"im{i}", [0, 1]) for i in range(10)]
    train, val = split_by_image(images, 0.2, seed=3)
    again = split_by_image(images, 0.2, seed=3)
    assert [im.key for im in train] == [im.key for im in again[0]]
    assert len(val) == 2 and len(train) == 8
    assert not {im.key for im in train} & {im.key for im in val}


def test_too_few_images_for_a_split():
    with pytest.raises(TrainingError, match="at least 2 are needed"):
        split_by_image([_image("only", [0])])
    with pytest.raises(TrainingError, match="no mitotic figure in the validation"):
        apply_split([_image("a", [0]), _image("b", [1])], {"a": "train", "b": "val"})


def test_gather_refuses_data_without_mitoses(tmp_path, midog_dataset):
    data = json.loads(midog_dataset["json"].read_text())
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] == 2]
    path = tmp_path / "negatives_only.json"
    path.write_text(json.dumps(data))
    with pytest.raises(TrainingError, match="no labelled mitotic figure"):
        gather(DataSpec(coco=str(path), images=str(midog_dataset["images"])))
    with pytest.raises(TrainingError, match="no training data"):
        gather(DataSpec())
    with pytest.raises(TrainingError, match="--coco needs --images"):
        gather(DataSpec(coco=str(path)))


def test_gather_with_split_file_splits_by_image(midog_dataset):
    split = gather(
        DataSpec(coco=str(midog_dataset["json"]), images=str(midog_dataset["images"]), split=str(midog_dataset["split"]))
    )
    assert [im.key for im in split.train] == ["001.tiff", "002.tiff"]
    assert [im.key for im in split.val] == ["004.tiff"]
    assert split.summary()["val_mitoses"] == 2


def test_review_store_labels(tmp_path, midog_dataset):
    from midog_viewer.review import ReviewStore

    slide = midog_dataset["images"] / "001.tiff"
    db = tmp_path / "review.sqlite"
    with ReviewStore(db) as store:
        slide_id = store.add_slide(slide, mpp=0.25, width=256, height=256)
        run = store.add_detection_run(slide_id, "demo", {})
        ids = store.add_detections(
            run,
            np.array([[10, 10, 60, 60], [100, 100, 150, 150], [150, 10, 200, 60], [10, 150, 60, 200]], float),
            np.array([0.9, 0.8, 0.7, 0.6]),
            ["mitotic figure"] * 4,
        )
        store.decide(int(ids[0]), "accept")
        store.decide(int(ids[1]), "reject")
        store.decide(int(ids[2]), "relabel", label="hard negative")
        # ids[3] stays pending: nobody judged it, so it does not train.
        store.add_annotation(slide_id, [200, 200, 250, 250], "mitotic figure")
    (image,) = images_from_review_store(db)
    assert image.path == slide.resolve()
    assert image.labels.tolist() == [0, 1, 1, 0]
    np.testing.assert_allclose(image.boxes[-1], [200, 200, 250, 250])


def test_training_label_rules():
    assert training_label("accepted", "mitotic figure") == 0
    assert training_label("ground truth", "not mitotic figure") == 1
    assert training_label("rejected", "mitotic figure") == 1
    assert training_label("pending", "mitotic figure") is None
    assert training_label("deleted", "mitotic figure") is None
    assert training_label("ground truth", "tumour cell") is None


def test_missing_review_store_is_refused(tmp_path):
    with pytest.raises(TrainingError, match="review database not found"):
        images_from_review_store(tmp_path / "nope.sqlite")


def test_patches_contain_their_object_and_only_labelled_patches():
    images = synthetic_images(2, seed=1, size=256)
    dataset = PatchDataset(images, 128, min_visible=0.3)
    assert len(dataset) == sum(len(im.boxes) for im in images)
    for item in range(len(dataset)):
        image, target = dataset[item]
        assert image.shape == (3, 128, 128) and image.dtype == torch.float32
        assert len(target["boxes"]) >= 1  # the object the patch was cut around
        boxes = target["boxes"]
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 128).all()


def test_random_patch_positions_change_per_epoch_and_repeat_per_seed():
    images = synthetic_images(1, seed=1, size=256)
    dataset = PatchDataset(images, 128, augment=lambda im, b, lab, gen: (im.float(), b, lab), seed=5)
    first = dataset.window(images[0], 0, torch.Generator().manual_seed(1))
    again = dataset.window(images[0], 0, torch.Generator().manual_seed(1))
    other = dataset.window(images[0], 0, torch.Generator().manual_seed(2))
    assert first == again and first != other
    x, y, w, h = first
    x1, y1, x2, y2 = images[0].boxes[0]
    assert x <= x1 and x2 <= x + w and y <= y1 and y2 <= y + h


def test_boxes_in_window_drops_mostly_hidden_boxes():
    boxes = np.array([[0, 0, 50, 50], [90, 0, 140, 50]], np.float32)  # the second is 20 % inside [0, 100)
    kept, labels = boxes_in_window(boxes, np.array([0, 1]), 0, 0, 100, 100, 0.3)
    assert labels.tolist() == [0]
    np.testing.assert_allclose(kept, [[0, 0, 50, 50]])


def test_synthetic_source_has_both_classes():
    images = synthetic_images(3, seed=0, size=256)
    labels = np.concatenate([im.labels for im in images])
    assert {0, 1} <= set(labels.tolist())
    assert all(im.pixels is not None and im.pixels.shape == (256, 256, 3) for im in images)


def test_random_patches_lie_inside_the_image_and_may_hold_no_box():
    images = synthetic_images(2, seed=1, size=256)
    objects = sum(len(im.boxes) for im in images)
    dataset = PatchDataset(images, 64, augment=lambda im, b, lab, gen: (im.float(), b, lab), random_patches_per_image=30)
    assert len(dataset) == objects + 2 * 30
    windows, empty = set(), 0
    for item in range(objects, len(dataset)):
        image, target = dataset[item]
        assert image.shape == (3, 64, 64)
        boxes = target["boxes"]
        assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= 64).all()
        empty += len(boxes) == 0
        image_index, _ = dataset.index[item]
        windows.add(dataset.random_window(images[image_index], torch.Generator().manual_seed(item)))
    assert all(0 <= x <= 256 - 64 and 0 <= y <= 256 - 64 for x, y, _, _ in windows)
    assert len(windows) > 50  # positions spread over the image
    assert empty > 0  # background patches without any labelled object are part of training
