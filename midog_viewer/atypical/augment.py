"""Training augmentation of a batch of crops: any rotation and flips, scale and shift, HED stain jitter,
brightness/contrast, blur, JPEG and noise (what differs between labs and scanners), all from one generator."""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image

from midog_viewer.detect.stain import RGB_FROM_HED

#: RGB <-> haematoxylin/eosin/DAB optical densities (Ruifrok & Johnston, as in scikit-image's rgb2hed).
_RGB_FROM_HED = torch.from_numpy(RGB_FROM_HED).float()
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)
_LOG_ADJUST = math.log(1e-6)


@dataclass(frozen=True)
class AugmentSettings:
    """How strong each augmentation is (probabilities and ranges)."""

    scale: float = 0.1  # zoom in 1 +- scale (scanner spacing differences)
    shift_px: float = 4.0  # centre offset (detections are not exactly centred)
    hed_scale: float = 0.12  # each stain amount x (1 +- hed_scale)
    hed_shift: float = 0.012  # and + hed_shift
    brightness: float = 0.08
    contrast: float = 0.12
    blur_p: float = 0.25
    blur_sigma: tuple[float, float] = (0.3, 1.2)
    jpeg_p: float = 0.25
    jpeg_quality: tuple[int, int] = (40, 95)
    noise_p: float = 0.2
    noise_std: float = 0.02

    def to_dict(self) -> dict:
        return asdict(self)


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def geometric(batch: torch.Tensor, out_px: int, s: AugmentSettings, gen: torch.Generator) -> torch.Tensor:
    """(N, 3, S, S) float crops → (N, 3, out, out): random angle, flip, zoom and shift about the centre."""
    n, _, size, _ = batch.shape
    angle = _uniform(n, 0.0, 2 * math.pi, gen)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    zoom = _uniform(n, 1 - s.scale, 1 + s.scale, gen)
    extent = out_px / size / zoom
    cos, sin = torch.cos(angle) * extent, torch.sin(angle) * extent
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flip, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin * flip, cos
    theta[:, :, 2] = _uniform(2 * n, -s.shift_px, s.shift_px, gen).view(n, 2) * 2 / size
    grid = torch.nn.functional.affine_grid(theta, [n, 3, out_px, out_px], align_corners=False)
    return torch.nn.functional.grid_sample(batch, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def hed_jitter(batch: torch.Tensor, s: AugmentSettings, gen: torch.Generator) -> torch.Tensor:
    """Scale and shift the haematoxylin, eosin and residual stain amounts of each crop independently."""
    n = batch.shape[0]
    rgb = batch.clamp(min=1e-6).permute(0, 2, 3, 1)
    stains = (torch.log(rgb) / _LOG_ADJUST) @ _HED_FROM_RGB
    alpha = _uniform(3 * n, 1 - s.hed_scale, 1 + s.hed_scale, gen).view(n, 1, 1, 3)
    beta = _uniform(3 * n, -s.hed_shift, s.hed_shift, gen).view(n, 1, 1, 3)
    stains = (stains * alpha + beta).clamp(min=0)
    out = torch.exp(_LOG_ADJUST * (stains @ _RGB_FROM_HED))
    return out.clamp(0, 1).permute(0, 3, 1, 2)


def photometric(batch: torch.Tensor, s: AugmentSettings, gen: torch.Generator) -> torch.Tensor:
    """Brightness/contrast, then per crop a chance of blur, JPEG re-encoding and sensor noise."""
    n = batch.shape[0]
    bright = _uniform(n, 1 - s.brightness, 1 + s.brightness, gen).view(n, 1, 1, 1)
    contrast = _uniform(n, 1 - s.contrast, 1 + s.contrast, gen).view(n, 1, 1, 1)
    mean = batch.mean(dim=(1, 2, 3), keepdim=True)
    batch = ((batch - mean) * contrast + mean) * bright
    batch = batch.clamp(0, 1)
    coins = torch.rand(n, 3, generator=gen)
    sigma = _uniform(n, *s.blur_sigma, gen)
    quality = torch.randint(s.jpeg_quality[0], s.jpeg_quality[1] + 1, (n,), generator=gen)
    noise = torch.randn(batch.shape, generator=gen) * s.noise_std
    out = []
    for i in range(n):
        crop = batch[i]
        if coins[i, 0] < s.blur_p:
            crop = F.gaussian_blur(crop, [5, 5], [float(sigma[i])] * 2)
        if coins[i, 1] < s.jpeg_p:
            crop = jpeg(crop, int(quality[i]))
        if coins[i, 2] < s.noise_p:
            crop = crop + noise[i]
        out.append(crop)
    return torch.stack(out).clamp(0, 1)


def jpeg(crop: torch.Tensor, quality: int) -> torch.Tensor:
    """A (3, H, W) float crop through JPEG at ``quality`` (Pillow, as scanners' and viewers' exports)."""
    buffer = io.BytesIO()
    Image.fromarray((crop * 255).round().byte().permute(1, 2, 0).numpy()).save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as image:
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).float() / 255.0


def augment(batch_u8: torch.Tensor, out_px: int, s: AugmentSettings, gen: torch.Generator) -> torch.Tensor:
    """uint8 (N, 3, S, S) crops with context → float (N, 3, out, out) augmented network input in 0..1."""
    batch = batch_u8.float() / 255.0
    batch = geometric(batch, out_px, s, gen)
    batch = hed_jitter(batch, s, gen)
    return photometric(batch, s, gen)
