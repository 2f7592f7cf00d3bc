"""The second look: each mitotic-figure candidate scored again on a window centred on the stride grid."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from detect_standins import DarkBlobModel, StandInSlide

from midog_viewer.cli import main
from midog_viewer.detect import CascadeConfig, Detector, save_checkpoint
from midog_viewer.detect.second_look import (
    CENTRE_TOLERANCE_PX,
    WHITE,
    SecondLook,
    centred_windows,
    second_look_scores,
)
from midog_viewer.errors import ModelError

GRID = 16


class GridPhaseModel(DarkBlobModel):
    """Stands in for a model that learnt every figure at one place on its stride grid: it boxes each dark blob
    (as :class:`DarkBlobModel`), scoring it 0.9 when the blob's centre lies on a multiple of 16 px, else 0.3."""

    def __init__(self, label: int = 0) -> None:
        super().__init__()
        self.label = label

    def forward(self, images):
        outputs = super().forward(images)
        for out in outputs:
            if len(out["boxes"]):
                box = out["boxes"][0]
                cx, cy = float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2
                out["scores"] = torch.tensor([0.9 if cx % GRID == 0 and cy % GRID == 0 else 0.3])
                out["labels"] = torch.tensor([self.label])
        return outputs


def _blob_image(cx: int, cy: int, size: int = 256, half: int = 10) -> torch.Tensor:
    image = torch.full((3, size, size), 230.0)
    image[:, cy - half : cy + half, cx - half : cx + half] = 20.0
    return image


def test_windows_put_each_centre_at_their_middle_and_white_past_the_image():
    image = torch.arange(3 * 40 * 50, dtype=torch.float32).reshape(3, 40, 50)
    windows = centred_windows(image, torch.tensor([[10.0, 20.0], [49.4, 0.2]]), side=32)
    assert windows.shape == (2, 3, 32, 32)
    assert torch.equal(windows[0, :, 16, 16], image[:, 20, 10])
    assert torch.equal(windows[1, :, 16, 16], image[:, 0, 49])  # rounded to the nearest pixel
    assert torch.all(windows[1, :, :16, :] == WHITE) and torch.all(windows[1, :, :, 17:] == WHITE)
    assert centred_windows(image, torch.zeros((0, 2)), side=32).shape == (0, 3, 32, 32)


def test_a_figure_off_the_grid_gets_the_score_it_has_on_the_grid():
    model = GridPhaseModel()
    image = _blob_image(101, 75)  # centre off the 16 px grid
    first = model([image])[0]
    assert first["scores"].tolist() == pytest.approx([0.3])
    scores = second_look_scores(model, image, first, SecondLook(side=128, floor=0.2))
    assert scores.tolist() == pytest.approx([0.9])
    assert model.calls[-1] == [(128, 128)]


def test_below_the_floor_another_class_or_a_lower_second_score_keep_their_score():
    image = _blob_image(101, 75)
    model = GridPhaseModel()
    first = model([image])[0]
    assert second_look_scores(model, image, first, SecondLook(side=128, floor=0.5)).tolist() == pytest.approx([0.3])
    assert len(model.calls) == 1  # nothing was looked at again

    negative = GridPhaseModel(label=1)
    found = negative([image])[0]
    assert second_look_scores(negative, image, found, SecondLook(side=128, floor=0.2)).tolist() == pytest.approx([0.3])
    assert len(negative.calls) == 1

    found = model([image])[0]
    higher = {"boxes": found["boxes"], "scores": torch.tensor([0.95]), "labels": found["labels"]}
    assert second_look_scores(model, image, higher, SecondLook(side=128, floor=0.2)).tolist() == pytest.approx([0.95])


def test_a_window_detection_away_from_the_centre_is_not_the_candidate():
    image = _blob_image(101, 75)
    model = GridPhaseModel()
    found = model([image])[0]
    shift = CENTRE_TOLERANCE_PX + 20
    elsewhere = {"boxes": found["boxes"] + torch.tensor([shift, 0, shift, 0]), "scores": found["scores"],
                 "labels": found["labels"]}
    assert second_look_scores(model, image, elsewhere, SecondLook(side=128, floor=0.2)).tolist() == pytest.approx([0.3])


def _checkpoint(tmp_path, **changes):
    cfg = dataclasses.replace(CascadeConfig.named("tiny"), **changes)
    torch.manual_seed(0)
    from midog_viewer.detect import build_cascade_rcnn

    return save_checkpoint(build_cascade_rcnn(cfg), tmp_path / "model.safetensors", cfg, {"purpose": "tests"})


def test_the_detector_takes_its_second_look_from_the_model_file_and_can_be_told_not_to(tmp_path):
    path = _checkpoint(tmp_path, second_look_px=128, second_look_floor=0.2)
    pixels = np.full((300, 300, 3), 230, np.uint8)
    pixels[120:140, 141:161] = 20  # a blob centred at (151, 130): off the grid
    slide = StandInSlide(pixels)

    looking = Detector(path, device="cpu", score_thr=0.5, stain_normalize=False)
    assert looking.second_look == SecondLook(128, 0.2, 0)
    looking.model = GridPhaseModel()
    assert looking.detect(slide).scores.tolist() == pytest.approx([0.9])

    once = Detector(path, device="cpu", score_thr=0.2, stain_normalize=False, second_look=False)
    assert once.second_look is None
    once.model = GridPhaseModel()
    assert once.detect(slide).scores.tolist() == pytest.approx([0.3])

    assert Detector(_checkpoint(tmp_path / "plain"), device="cpu").second_look is None  # a model without one


def test_a_second_look_on_a_real_model_only_raises_scores(tmp_path, shared_data):
    from midog_viewer.io import open_slide

    path = _checkpoint(tmp_path, second_look_px=128, second_look_floor=0.0, score_threshold=0.0)
    with open_slide(shared_data / "tiles" / "stardist_histo.jpg") as slide:
        region = (0, 0, 256, 256)
        once = Detector(path, device="cpu", score_thr=0.0, second_look=False).detect(slide, region)
        twice = Detector(path, device="cpu", score_thr=0.0).detect(slide, region)
    assert len(once) == len(twice) > 0
    order = np.lexsort(once.boxes.T), np.lexsort(twice.boxes.T)
    assert np.allclose(once.boxes[order[0]], twice.boxes[order[1]])
    assert np.all(twice.scores[order[1]] >= once.scores[order[0]] - 1e-6)


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"second_look_px": 100}, "multiple of pad_size_divisor"), ({"second_look_px": -32}, "second_look_px"),
     ({"second_look_floor": 1.5}, "second_look_floor")],
)
def test_a_bad_second_look_in_a_model_file_is_refused(changes, message):
    with pytest.raises(ModelError, match=message):
        dataclasses.replace(CascadeConfig.named("tiny"), **changes)


def test_detect_without_a_second_look_says_so_in_its_output(tmp_path, capsys):
    path = _checkpoint(tmp_path, second_look_px=128)
    image = tmp_path / "field.png"
    from PIL import Image

    Image.fromarray(np.full((200, 200, 3), 230, np.uint8)).save(image)
    for flags, expected in (([], 128), (["--no-second-look"], None)):
        out = tmp_path / "dets.json"
        status = main(["detect", str(image), "--model", str(path), "--device", "cpu", "--no-atypical", *flags,
                       "--out", str(out)])
        assert status == 0, capsys.readouterr().err
        assert json.loads(out.read_text())["second_look_px"] == expected


class RecordingGridModel(GridPhaseModel):
    """A :class:`GridPhaseModel` that keeps every image it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, images):
        self.seen.extend(images)
        return super().forward(images)


def test_a_candidate_near_a_tile_edge_is_looked_at_with_the_slide_around_it(tmp_path):
    path = _checkpoint(tmp_path, second_look_px=128)
    pixels = np.full((600, 1000, 3), 200, np.uint8)  # tissue-grey everywhere: white in a window is padding
    pixels[290:310, 460:480] = 20  # centre (470, 300): 42 px inside the first tile's right edge, off the grid
    detector = Detector(path, device="cpu", score_thr=0.5, stain_normalize=False, batch_size=4)
    detector.model = RecordingGridModel()
    found = detector.detect(StandInSlide(pixels))
    assert found.scores.tolist() == pytest.approx([0.9])
    windows = [im for im in detector.model.seen if tuple(im.shape[1:]) == (128, 128)]
    assert windows and all(float(w.max()) <= 200 for w in windows)  # read from the slide, not filled white
