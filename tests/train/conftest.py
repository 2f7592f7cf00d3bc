"""Fixtures for the training tests: small synthetic images written as a MIDOG-style dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from midog_viewer.synthetic import make_hpf, write_hpf_tiff

#: Side of the synthetic test images: big enough for a few objects, small enough for fast steps.
SIDE = 256


def write_midog_dataset(folder: Path, n_labelled: int = 4, n_unlabelled: int = 1) -> dict[str, Path]:
    """TIFFs 001.tiff… and a MIDOG 2021-style JSON (bbox xyxy, "not mitotic figure", unlabelled images)
    plus a split file in the organisers' indented-tree layout (last labelled image in ``valid``)."""
    images = folder / "images"
    images.mkdir(parents=True)
    coco = {
        "info": {"description": "synthetic stand-in for MIDOG.json"},
        "images": [],
        "categories": [{"id": 1, "name": "mitotic figure"}, {"id": 2, "name": "not mitotic figure"}],
        "annotations": [],
    }
    for index in range(1, n_labelled + n_unlabelled + 1):
        name = f"{index:03d}.tiff"
        hpf = make_hpf(seed=index, width=SIDE, height=SIDE)
        write_hpf_tiff(hpf, images / name)
        coco["images"].append({"license": 1, "file_name": name, "id": index, "width": SIDE, "height": SIDE})
        if index > n_labelled:
            continue  # like MIDOG's 151-200: an image without labels
        for box, label in zip(hpf.boxes, hpf.labels):
            coco["annotations"].append(
                {
                    "bbox": [int(round(v)) for v in box],  # MIDOG: [x1, y1, x2, y2]
                    "category_id": 1 if label == "mitotic figure" else 2,
                    "image_id": index,
                    "id": len(coco["annotations"]) + 1,
                }
            )
    json_path = folder / "MIDOG.json"
    json_path.write_text(json.dumps(coco))
    train_names = [f"{i:03d}.tiff" for i in range(1, n_labelled)]
    lines = ["MIDOG/", "    A/", "        train/"]
    lines += [f"            {n}" for n in train_names]
    lines += ["        valid/", f"            {n_labelled:03d}.tiff"]
    split_path = folder / "train_val_split.txt"
    split_path.write_text("\n".join(lines) + "\n")
    return {"json": json_path, "images": images, "split": split_path}


@pytest.fixture
def midog_dataset(tmp_path: Path) -> dict[str, Path]:
    return write_midog_dataset(tmp_path / "midog")
