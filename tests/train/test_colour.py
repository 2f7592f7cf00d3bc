"""LAB colour transfer (RandStainNA): the colour space is right, and a patch takes the statistics drawn for it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from midog_viewer.errors import TrainingError
from midog_viewer.train.colour import LabSpread, lab_spread, lab_to_rgb, lab_transfer, rgb_to_lab
from midog_viewer.train.recipe import Augmenter, Recipe


def _rgb(*pixel: int) -> torch.Tensor:
    return torch.tensor(pixel, dtype=torch.float32).view(3, 1, 1)


@pytest.mark.parametrize(
    ("rgb", "lab"),
    [((255, 255, 255), (100.0, 0.0, 0.0)), ((0, 0, 0), (0.0, 0.0, 0.0)),
     ((255, 0, 0), (53.24, 80.09, 67.20)), ((0, 0, 255), (32.30, 79.19, -107.86))],
)
def test_known_colours_have_their_cie_lab_values(rgb, lab):
    assert rgb_to_lab(_rgb(*rgb)).flatten().tolist() == pytest.approx(lab, abs=0.05)


def test_lab_round_trips_every_colour_to_within_a_grey_level():
    pixels = torch.randint(0, 256, (3, 64, 64)).float()
    assert float((lab_to_rgb(rgb_to_lab(pixels)) - pixels).abs().max()) < 0.01


def test_a_patch_takes_the_statistics_drawn_for_it():
    """With no spread the draw is the mean itself: the recoloured patch has exactly those LAB statistics."""
    rng = np.random.default_rng(0)
    pink = np.clip(rng.normal((220, 160, 200), 20, (48, 48, 3)), 0, 255).astype(np.uint8)
    target = LabSpread((55.0, 20.0, -10.0), (0.0, 0.0, 0.0), (10.0, 6.0, 4.0), (0.0, 0.0, 0.0))
    image = torch.from_numpy(pink).permute(2, 0, 1).float()
    lab = rgb_to_lab(lab_transfer(image, target, torch.Generator().manual_seed(0)))
    assert lab.mean(dim=(1, 2)).tolist() == pytest.approx(target.mean_of_means, abs=0.5)
    assert lab.std(dim=(1, 2)).tolist() == pytest.approx(target.mean_of_stds, abs=0.5)


def test_the_spread_is_measured_over_images_and_round_trips():
    light = np.full((8, 8, 3), 230, np.uint8)
    dark = np.full((8, 8, 3), 90, np.uint8)
    spread = lab_spread([light, dark])
    assert spread.mean_of_means[0] == pytest.approx(
        float((rgb_to_lab(_rgb(230, 230, 230))[0] + rgb_to_lab(_rgb(90, 90, 90))[0]).squeeze()) / 2, abs=0.01)
    assert spread.std_of_means[0] > 20 and spread.mean_of_stds == pytest.approx((0, 0, 0), abs=1e-3)
    assert LabSpread.from_dict(spread.to_dict()) == spread
    with pytest.raises(ValueError):
        lab_spread([])


def test_the_augmenter_recolours_reproducibly_and_needs_the_spread():
    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    nothing = (torch.zeros((0, 4)), torch.zeros((0,), dtype=torch.int64))
    plain = dict(brightness=0, contrast=0, saturation=0, hue=0, crop_probability=0, scales_each_side=0,
                 relative_scales=True)
    spread = LabSpread((60.0, 25.0, -15.0), (8.0, 8.0, 8.0), (15.0, 8.0, 6.0), (3.0, 2.0, 2.0)).to_dict()
    augment = Augmenter(Recipe(lab_transfer_probability=1.0, lab_spread=spread, **plain))
    first = augment(image, *nothing, torch.Generator().manual_seed(4))[0]
    again = augment(image, *nothing, torch.Generator().manual_seed(4))[0]
    other = augment(image, *nothing, torch.Generator().manual_seed(5))[0]
    assert torch.equal(first, again) and (first - other).abs().mean() > 1
    assert 0 <= float(first.min()) <= float(first.max()) <= 255
    with pytest.raises(TrainingError, match="colour spread"):
        Augmenter(Recipe(lab_transfer_probability=1.0, **plain))(image, *nothing, torch.Generator().manual_seed(0))
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(TrainingError, match="LAB transfer probability"):
            Recipe(lab_transfer_probability=bad)
