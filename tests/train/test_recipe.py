"""The seed's recipe: warm-up and decay of the learning rate, augmentation that keeps boxes on their objects."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision import tv_tensors

from midog_viewer.errors import TrainingError
from midog_viewer.train.recipe import Augmenter, Recipe, lr_factor, random_crop_keeping_boxes


def test_defaults_are_the_seeds():
    r = Recipe()
    assert (r.lr, r.momentum, r.weight_decay, r.batch_size, r.epochs) == (0.01, 0.9, 1e-4, 4, 50)
    assert (r.warmup_steps, r.warmup_ratio) == (500, 0.001)
    assert r.scales == (384, 448, 512, 576, 640)  # 512 and four more scales in 64 px steps


def test_linear_warmup_then_step_decay():
    r = Recipe(warmup_steps=500, warmup_ratio=0.001, lr_decay_epochs=(2,))
    assert lr_factor(0, 1000, r) == pytest.approx(0.001)
    assert lr_factor(250, 1000, r) == pytest.approx(0.001 + 0.999 * 0.5)
    assert lr_factor(500, 1000, r) == pytest.approx(1.0)
    assert lr_factor(1999, 1000, r) == pytest.approx(1.0)
    assert lr_factor(2000, 1000, r) == pytest.approx(0.1)


def test_recipe_round_trips_and_refuses_nonsense():
    r = Recipe(epochs=3, lr_decay_epochs=(2,), rcnn_samples=64)
    assert Recipe.from_dict(r.to_dict()) == r
    assert r.model_overrides() == {"rcnn_num_samples": 64}
    with pytest.raises(TrainingError, match="unknown recipe setting"):
        Recipe.from_dict({"epochs": 3, "learning_rate": 0.1})
    with pytest.raises(TrainingError, match="at least 1"):
        Recipe(epochs=0)
    with pytest.raises(TrainingError, match="positive"):
        Recipe(lr=0)
    with pytest.raises(TrainingError, match="random patches"):
        Recipe(random_patches_per_image=-1)


def _marked_image(boxes: np.ndarray, size: int = 256) -> torch.Tensor:
    """Grey image with each box painted black, so boxes can be checked against pixels after augmentation."""
    image = np.full((size, size, 3), 200, np.uint8)
    for x1, y1, x2, y2 in boxes.astype(int):
        image[y1:y2, x1:x2] = 0
    return torch.from_numpy(image).permute(2, 0, 1).contiguous()


def test_augmented_boxes_still_cover_their_objects():
    boxes = np.array([[40, 40, 90, 90], [150, 120, 200, 170]], np.float32)
    recipe = Recipe(patch_size=256, brightness=0, contrast=0, saturation=0, hue=0, crop_probability=1.0)
    augment = Augmenter(recipe)
    for seed in range(12):
        image, out_boxes, labels = augment(
            _marked_image(boxes), torch.from_numpy(boxes), torch.tensor([0, 1]), torch.Generator().manual_seed(seed)
        )
        assert image.dtype == torch.float32 and image.shape[0] == 3
        assert max(image.shape[1:]) in recipe.scales or max(image.shape[1:]) < 256
        assert len(out_boxes) == len(labels) >= 1
        for x1, y1, x2, y2 in out_boxes.round().int().tolist():
            inside = image[:, y1 + 2 : y2 - 2, x1 + 2 : x2 - 2]
            assert inside.numel() and inside.mean() < 60, f"seed {seed}: box no longer on its dark object"


def test_augmentation_is_reproducible_from_its_generator():
    boxes = torch.tensor([[40.0, 40, 90, 90]])
    augment = Augmenter(Recipe(patch_size=256))
    image = _marked_image(boxes.numpy())
    a = augment(image, boxes, torch.tensor([0]), torch.Generator().manual_seed(7))
    b = augment(image, boxes, torch.tensor([0]), torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 200), st.integers(0, 200), st.integers(8, 56), st.integers(8, 56)),
        min_size=1,
        max_size=6,
    ),
    st.integers(0, 2**31 - 1),
)
def test_random_crop_keeps_at_least_the_minimum_of_every_box(raw, seed):
    boxes = torch.tensor([[x, y, min(x + w, 256), min(y + h, 256)] for x, y, w, h in raw], dtype=torch.float32)
    image = tv_tensors.Image(torch.zeros(3, 256, 256, dtype=torch.uint8))
    bbs = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(256, 256))
    labels = torch.arange(len(boxes))
    out_image, out_boxes, out_labels = random_crop_keeping_boxes(
        image, bbs, labels, 0.3, torch.Generator().manual_seed(seed)
    )
    height, width = out_image.shape[-2:]
    plain = out_boxes.as_subclass(torch.Tensor)
    assert len(plain) == len(out_labels) >= 1
    assert (plain[:, 0::2] >= 0).all() and (plain[:, 2] <= width).all() and (plain[:, 3] <= height).all()
    original = boxes[out_labels]
    kept_area = (plain[:, 2] - plain[:, 0]) * (plain[:, 3] - plain[:, 1])
    full_area = (original[:, 2] - original[:, 0]) * (original[:, 3] - original[:, 1])
    assert (kept_area / full_area >= 0.3 - 1e-6).all()


def test_relative_scales_never_enlarge_a_crop_to_a_patch():
    recipe = Recipe(relative_scales=True, crop_probability=0.0)
    augment = Augmenter(recipe)
    image = torch.full((3, 128, 128), 128, dtype=torch.uint8)
    boxes, labels = torch.tensor([[39.0, 39.0, 89.0, 89.0]]), torch.tensor([0])
    sides = set()
    for seed in range(30):
        out, out_boxes, _ = augment(image, boxes, labels, torch.Generator().manual_seed(seed))
        sides.add(out.shape[-1])
        scale = out.shape[-1] / 128
        assert float(out_boxes[0, 2] - out_boxes[0, 0]) == pytest.approx(50 * scale, rel=0.02)
    assert min(sides) >= 96 and max(sides) <= 160 and len(sides) > 1  # 0.75-1.25 of the crop, not 384-640 px


def test_a_larger_blur_sigma_blurs_more():
    image = torch.randint(0, 256, (3, 96, 96), dtype=torch.uint8)
    nothing = (torch.zeros((0, 4)), torch.zeros((0,), dtype=torch.int64))
    spread = []
    for sigma in (1.5, 4.0):
        augment = Augmenter(Recipe(blur_probability=1.0, blur_max_sigma=sigma, brightness=0, contrast=0,
                                   saturation=0, hue=0, crop_probability=0, scales_each_side=0, relative_scales=True))
        outs = [augment(image, *nothing, torch.Generator().manual_seed(seed))[0] for seed in range(12)]
        spread.append(float(torch.stack([o.std() for o in outs]).mean()))
    assert spread[1] < spread[0] < float(image.float().std())


def test_stain_blur_and_jpeg_augmentation_keep_the_image_valid_and_vary_it():
    from midog_viewer.train.recipe import hed_jitter

    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    unchanged = hed_jitter(image.float(), 0.0, torch.Generator().manual_seed(0))
    assert torch.allclose(unchanged, image.float(), atol=0.01)
    jittered = hed_jitter(image.float(), 0.1, torch.Generator().manual_seed(0))
    assert 0 <= float(jittered.min()) and float(jittered.max()) <= 255 and (jittered - image.float()).abs().mean() > 1
    augment = Augmenter(Recipe(hed_jitter=0.05, blur_probability=1.0, jpeg_probability=1.0, relative_scales=True))
    out, _, _ = augment(image, torch.zeros((0, 4)), torch.zeros((0,), dtype=torch.int64), torch.Generator().manual_seed(1))
    assert out.dtype == torch.float32 and out.shape[0] == 3 and 0 <= float(out.min()) <= float(out.max()) <= 255
    for bad in (dict(hed_jitter=1.5), dict(blur_probability=2.0), dict(val_field_mitoses_per_mm2=0.0),
                dict(blur_max_sigma=0.0), dict(blur_max_sigma=float("nan")), dict(source_repeats={"A": 0}),
                dict(source_repeats={"A": 2.5})):
        with pytest.raises(TrainingError):
            Recipe(**bad)


def test_a_random_shift_moves_image_and_boxes_together_and_is_refused_when_nonsense():
    """--translate: figures must meet every phase of the stride grid; the boxes follow the pixels exactly."""
    from midog_viewer.train.recipe import shift_right_down

    image = torch.full((3, 40, 60), 255, dtype=torch.uint8)
    image[:, 10:20, 30:40] = 0  # a dark square under the box
    boxes = torch.tensor([[30.0, 10.0, 40.0, 20.0]])
    seen = set()
    for seed in range(20):
        out, moved = shift_right_down(image, boxes, 7, torch.Generator().manual_seed(seed))
        dx, dy = int(moved[0, 0] - 30), int(moved[0, 1] - 10)
        seen.add((dx, dy))
        assert 0 <= dx <= 7 and 0 <= dy <= 7 and out.shape == (3, 40 + dy, 60 + dx)
        x0, y0, x1, y1 = (int(v) for v in moved[0])
        assert int(out[:, y0:y1, x0:x1].max()) == 0
        assert bool((out[:, :dy, :] == 255).all()) and bool((out[:, :, :dx] == 255).all())
    assert len(seen) > 10
    plain = dict(brightness=0, contrast=0, saturation=0, hue=0, crop_probability=0, scales_each_side=0,
                 relative_scales=True)
    out, moved, _ = Augmenter(Recipe(translate_px=7, **plain))(image, boxes, torch.tensor([0]),
                                                                torch.Generator().manual_seed(1))
    assert out.shape[-2:] != image.shape[-2:] or torch.equal(moved, boxes)
    for bad in (-1, 300, 2.5, True):
        with pytest.raises(TrainingError, match="random shift"):
            Recipe(translate_px=bad)
