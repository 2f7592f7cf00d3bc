"""The seed's training recipe: hyper-parameters, augmentation and the learning-rate schedule.

Defaults follow the seed (MIDOG 2021 Cascade R-CNN): SGD lr 0.01, momentum 0.9, weight decay 1e-4,
linear warm-up over 500 steps from ratio 0.001, gradient clipping, batch 4, 50 epochs; 512 px patches
augmented by flips, a random crop that keeps at least 0.3 of each box, multi-scale resizing (512 px and
four more scales in 64 px steps around it) and colour/contrast jitter. Everything is a field, so a run
can change it and the run folder records what was used.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from midog_viewer.detect.stain import RGB_FROM_HED
from midog_viewer.errors import TrainingError
from midog_viewer.train.colour import LabSpread, lab_transfer


@dataclass
class Recipe:
    """Hyper-parameters of one training run (JSON-serialisable, saved in the run folder)."""

    epochs: int = 50
    batch_size: int = 4
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 500
    warmup_ratio: float = 0.001
    #: Epochs (1-based, counted from the start of the run) after which the learning rate is multiplied by 0.1.
    lr_decay_epochs: tuple[int, ...] = ()
    grad_clip_norm: float = 35.0
    #: Training-time sampling of the model (None keeps the configuration's): RoIs per image for the R-CNN
    #: heads and RPN proposals kept per image. Smaller is faster on a CPU; checkpoints keep the preset's values.
    rcnn_samples: int | None = None
    rpn_train_proposals: int | None = None
    patch_size: int = 512
    #: Extra scales on either side of ``patch_size`` (2 → 4 more scales), ``scale_step`` px apart
    #: (None: an eighth of the patch, 64 px for 512 px patches).
    scales_each_side: int = 2
    scale_step: int | None = None
    min_crop_visible: float = 0.3
    #: Shift each patch right and down by a random 0..this many px (white fill), so objects sit at every phase
    #: of the network's stride grid: a strided CNN scores a figure differently 3 px further on, and crop
    #: mosaics otherwise hold their figures at the same few positions (0: off).
    translate_px: int = 0
    crop_probability: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.1
    hue: float = 0.02
    #: For crop data sets: train on crops mosaicked into fields of about this many px, and validate on fixed
    #: mosaics of the validation crops (0: patches as they are; see :mod:`midog_viewer.train.mosaic`).
    mosaic_side: int = 0
    #: Scales resize a patch relative to its own size (``scale / patch_size``) instead of to that longest side:
    #: for crop data sets, whose images are smaller than a patch and must not be enlarged to one.
    relative_scales: bool = False
    #: Stain augmentation in haematoxylin/eosin/DAB space (Tellez et al. 2018): each stain's amount is scaled by
    #: 1 ± this and shifted by ± this (0 = off). Teaches the model other labs' and scanners' stains.
    hed_jitter: float = 0.0
    #: Probability of a Gaussian blur (sigma 0.1 px to ``blur_max_sigma``), as from a scanner slightly out of focus.
    blur_probability: float = 0.0
    #: Largest blur sigma in px (at the patch's own scale).
    blur_max_sigma: float = 1.5
    #: Probability of JPEG re-compression at quality 50-95, as in scanners' tile formats.
    jpeg_probability: float = 0.0
    #: Probability of recolouring a patch (a whole mosaic) in LAB to statistics drawn from how they spread over
    #: the training images (RandStainNA; see :mod:`midog_viewer.train.colour`). Crop mosaics only.
    lab_transfer_probability: float = 0.0
    #: That spread (:class:`~midog_viewer.train.colour.LabSpread` as a dict), measured on the training images
    #: when the run starts and kept here so a resumed run draws from the same one.
    lab_spread: dict[str, list[float]] | None = None
    stain_normalise: bool = True
    #: For crop data sets: crops of these sources appear this many times per epoch (each time turned, placed
    #: and augmented anew), so a small source the model underfits weighs more. Names as in the image table.
    source_repeats: dict[str, int] = field(default_factory=dict)
    #: Mixed precision; used only on CUDA.
    amp: bool = True
    seed: int = 0
    #: Training patches drawn per labelled object per epoch.
    patches_per_object: int = 1
    #: Patches per image per epoch at random positions, so the model also learns the ordinary tissue it
    #: must not fire on (0, the seed's recipe: patches around labelled objects only).
    random_patches_per_image: int = 0
    workers: int = 0
    log_every: int = 10
    #: Keep only this many per-epoch checkpoints (0 keeps all); ``best`` and ``last`` are always kept.
    keep_epoch_checkpoints: int = 0
    #: Score threshold for "mitotic figure" predictions when computing the validation F1; None chooses, per
    #: epoch, the threshold with the best validation F1, and the checkpoint records it as its operating point.
    val_score_threshold: float | None = 0.5
    #: For crop data sets: validate by the F1 implied on a field holding this many mitoses per mm² (see
    #: :func:`midog_viewer.train.validate.field_scores`); None scores the validation images as they are.
    val_field_mitoses_per_mm2: float | None = None
    #: The second look the trained model records and validates with (window side in model px, 0: none;
    #: see :mod:`midog_viewer.detect.second_look`); None keeps the starting checkpoint's (a preset has none).
    second_look_px: int | None = None

    def __post_init__(self) -> None:
        self.lr_decay_epochs = tuple(int(e) for e in self.lr_decay_epochs)
        if self.epochs < 1 or self.batch_size < 1:
            raise TrainingError("epochs and batch size must be at least 1.")
        if self.patches_per_object < 1 or self.random_patches_per_image < 0:
            raise TrainingError("patches per object must be at least 1 and random patches per image at least 0.")
        if self.lr <= 0:
            raise TrainingError(f"the learning rate must be positive, got {self.lr}.")
        if self.patch_size < 64 or min(self.scales) < 32:
            raise TrainingError("the patch size and scales leave a patch smaller than 32 px.")
        if self.val_score_threshold is not None and not 0.0 <= self.val_score_threshold <= 1.0:
            raise TrainingError(f"the validation score threshold must lie in [0, 1], not {self.val_score_threshold}.")
        if not 0.0 < self.min_crop_visible <= 1.0:
            raise TrainingError("min_crop_visible must be in (0, 1].")
        density = self.val_field_mitoses_per_mm2
        if density is not None and not (math.isfinite(density) and density > 0):
            raise TrainingError(f"the field density must be a positive number of mitoses per mm², not {density}.")
        if self.mosaic_side and not 64 <= self.mosaic_side <= 4096:
            raise TrainingError(f"the mosaic side must lie in 64-4096 px (0: off), not {self.mosaic_side}.")
        if not 0.0 <= self.hed_jitter < 1.0:
            raise TrainingError(f"the HED jitter must lie in [0, 1), not {self.hed_jitter}.")
        if not (0.0 <= self.blur_probability <= 1.0 and 0.0 <= self.jpeg_probability <= 1.0):
            raise TrainingError("blur and JPEG probabilities must lie in [0, 1].")
        if not (math.isfinite(self.blur_max_sigma) and 0.1 < self.blur_max_sigma <= 5.0):
            raise TrainingError(f"the largest blur sigma must lie in (0.1, 5] px, not {self.blur_max_sigma}.")
        if isinstance(self.translate_px, bool) or not isinstance(self.translate_px, int) or not 0 <= self.translate_px <= 256:
            raise TrainingError(f"the random shift must be a whole number of px in 0-256, not {self.translate_px!r}.")
        look = self.second_look_px
        if look is not None and (isinstance(look, bool) or not isinstance(look, int) or not 0 <= look <= 2048
                                 or look % 32):
            raise TrainingError(
                f"the second look's window must be a multiple of 32 px in 0-2048 (0: none), not {look!r}."
            )
        if not 0.0 <= self.lab_transfer_probability <= 1.0:
            raise TrainingError(f"the LAB transfer probability must lie in [0, 1], not {self.lab_transfer_probability}.")
        self.source_repeats = dict(self.source_repeats)
        for source, times in self.source_repeats.items():
            if isinstance(times, bool) or not isinstance(times, int) or not 1 <= times <= 100:
                raise TrainingError(f"a source's repeats must be a whole number in 1-100, not {times!r} for {source!r}.")

    @property
    def scales(self) -> tuple[int, ...]:
        """Training image sizes: the patch size and ``scales_each_side`` more on each side."""
        k = self.scales_each_side
        step = self.scale_step or self.patch_size // 8
        return tuple(self.patch_size + i * step for i in range(-k, k + 1))

    def model_overrides(self) -> dict[str, int]:
        """Fields of the model configuration this recipe changes for training."""
        overrides = {"rcnn_num_samples": self.rcnn_samples, "rpn_train_max_per_img": self.rpn_train_proposals}
        return {k: int(v) for k, v in overrides.items() if v is not None}

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["lr_decay_epochs"] = list(self.lr_decay_epochs)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise TrainingError(f"unknown recipe setting(s): {', '.join(unknown)}.")
        return cls(**data)


def lr_factor(step: int, steps_per_epoch: int, recipe: Recipe) -> float:
    """Multiplier of ``recipe.lr`` at optimisation step ``step`` (0-based): linear warm-up, then steps."""
    factor = 1.0
    if step < recipe.warmup_steps:
        factor = recipe.warmup_ratio + (1.0 - recipe.warmup_ratio) * step / recipe.warmup_steps
    epoch_done = step // max(1, steps_per_epoch)
    decays = sum(1 for e in recipe.lr_decay_epochs if epoch_done >= e)
    return factor * (0.1**decays)


@dataclass
class Augmenter:
    """Random augmentation of one patch and its boxes, following the recipe.

    Called with a uint8 image tensor [3,H,W], boxes [N,4] xyxy (float) and labels [N] (int64);
    returns the float image (0..255), boxes and labels. A ``torch.Generator`` makes it reproducible.
    """

    recipe: Recipe
    _jitter: v2.ColorJitter = field(init=False, repr=False)
    _lab_spread: LabSpread | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        r = self.recipe
        self._jitter = v2.ColorJitter(r.brightness, r.contrast, r.saturation, r.hue)
        if r.lab_transfer_probability:
            if r.lab_spread is None:
                raise TrainingError("LAB transfer needs the training images' colour spread (Recipe.lab_spread).")
            self._lab_spread = LabSpread.from_dict(r.lab_spread)

    def __call__(
        self, image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r = self.recipe
        if r.translate_px:
            image, boxes = shift_right_down(image, boxes, r.translate_px, generator)
        height, width = image.shape[-2:]
        img = tv_tensors.Image(image)
        bbs = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width))

        if _coin(generator) < 0.5:
            img, bbs = F.horizontal_flip(img), F.horizontal_flip(bbs)
        if _coin(generator) < 0.5:
            img, bbs = F.vertical_flip(img), F.vertical_flip(bbs)
        if len(boxes) and _coin(generator) < r.crop_probability:
            img, bbs, labels = random_crop_keeping_boxes(img, bbs, labels, r.min_crop_visible, generator)
        scale = r.scales[int(torch.randint(len(r.scales), (1,), generator=generator))]
        longest = max(img.shape[-2:])
        target = round(longest * scale / r.patch_size) if r.relative_scales else scale
        if target != longest:
            size = _scaled_size(img.shape[-2:], target)
            img, bbs = F.resize(img, list(size), antialias=True), F.resize(bbs, list(size))
        if r.jpeg_probability and _coin(generator) < r.jpeg_probability:
            img = tv_tensors.wrap(F.jpeg(img.as_subclass(torch.Tensor), int(50 + 45 * _coin(generator))), like=img)
        if r.blur_probability and _coin(generator) < r.blur_probability:
            sigma = 0.1 + (r.blur_max_sigma - 0.1) * _coin(generator)
            img = F.gaussian_blur(img, [2 * math.ceil(2 * sigma) + 1] * 2, [sigma, sigma])
        # ColorJitter draws from torch's global generator: seed it from ours so runs are reproducible.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=generator)))
            img = self._jitter(img)
        out = img.as_subclass(torch.Tensor).float()
        if self._lab_spread is not None and _coin(generator) < r.lab_transfer_probability:
            out = lab_transfer(out, self._lab_spread, generator)
        if r.hed_jitter:
            out = hed_jitter(out, r.hed_jitter, generator)
        return out, bbs.as_subclass(torch.Tensor).float(), labels


_RGB_FROM_HED = torch.from_numpy(RGB_FROM_HED).float()
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)


def hed_jitter(image: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Scale and shift each stain's optical density of a float RGB (3, H, W) 0..255 image by random amounts."""
    alpha = 1.0 + strength * (2 * torch.rand(3, generator=generator) - 1)
    beta = strength * (2 * torch.rand(3, generator=generator) - 1)
    return scale_stains(image, alpha, beta)


def scale_stains(image: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Float RGB (3, H, W) 0..255 with the haematoxylin, eosin and DAB densities times ``alpha`` plus ``beta``."""
    od = -torch.log((image.clamp(0, 255) + 1.0) / 256.0)  # (3, H, W)
    stains = torch.einsum("chw,cs->shw", od, _HED_FROM_RGB)
    stains = stains * torch.as_tensor(alpha, dtype=stains.dtype).view(3, 1, 1) \
        + torch.as_tensor(beta, dtype=stains.dtype).view(3, 1, 1)
    od = torch.einsum("shw,sc->chw", stains, _RGB_FROM_HED)
    return (256.0 * torch.exp(-od) - 1.0).clamp(0, 255)


def shift_right_down(
    image: torch.Tensor, boxes: torch.Tensor, most: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The uint8 (3, H, W) image with white rows and columns added above and left (0..``most`` each), and its
    xyxy boxes moved with it."""
    dx, dy = (int(v) for v in torch.randint(most + 1, (2,), generator=generator))
    if not dx and not dy:
        return image, boxes
    out = torch.full((image.shape[0], image.shape[1] + dy, image.shape[2] + dx), 255, dtype=image.dtype)
    out[:, dy:, dx:] = image
    return out, boxes + torch.tensor([dx, dy, dx, dy], dtype=boxes.dtype)


def random_crop_keeping_boxes(
    image: tv_tensors.Image,
    boxes: tv_tensors.BoundingBoxes,
    labels: torch.Tensor,
    min_visible: float,
    generator: torch.Generator,
    attempts: int = 20,
) -> tuple[tv_tensors.Image, tv_tensors.BoundingBoxes, torch.Tensor]:
    """Crop a random window (50–100 % of each side) in which every box keeps ≥ ``min_visible`` of its area.

    A box's clipped part is a subset of it, so its IoU with the original equals the visible fraction.
    Boxes wholly outside the window are dropped; if no window keeps every other box well enough and at
    least one box, the input comes back unchanged.
    """
    height, width = image.shape[-2:]
    plain = boxes.as_subclass(torch.Tensor)
    areas = ((plain[:, 2] - plain[:, 0]) * (plain[:, 3] - plain[:, 1])).clamp(min=1e-6)
    for _ in range(attempts):
        ch = int(height * (0.5 + 0.5 * _coin(generator)))
        cw = int(width * (0.5 + 0.5 * _coin(generator)))
        top = int(_coin(generator) * (height - ch + 1))
        left = int(_coin(generator) * (width - cw + 1))
        clipped = plain.clone()
        clipped[:, 0::2] = (clipped[:, 0::2] - left).clamp(0, cw)
        clipped[:, 1::2] = (clipped[:, 1::2] - top).clamp(0, ch)
        visible = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1]) / areas
        inside = visible > 0
        if not inside.any() or (visible[inside] < min_visible).any():
            continue
        cropped_image = F.crop(image, top, left, ch, cw)
        cropped_boxes = tv_tensors.wrap(clipped[inside], like=boxes, canvas_size=(ch, cw))
        return cropped_image, cropped_boxes, labels[inside]
    return image, boxes, labels


def _scaled_size(shape: tuple[int, int] | torch.Size, longest: int) -> tuple[int, int]:
    height, width = int(shape[0]), int(shape[1])
    ratio = longest / max(height, width)
    return max(1, round(height * ratio)), max(1, round(width * ratio))


def _coin(generator: torch.Generator) -> float:
    return float(torch.rand((), generator=generator))


def total_steps(n_patches: int, recipe: Recipe) -> int:
    """Optimisation steps in a run: batches per epoch (last partial batch included) times epochs."""
    return math.ceil(n_patches / recipe.batch_size) * recipe.epochs
