"""Colour augmentation in CIE LAB: recolour a patch as another lab might have stained and scanned it.

RandStainNA (Shen et al., MICCAI 2022): each LAB channel of a patch is standardised and given a new mean and
standard deviation, drawn from how those statistics spread over the training images. A model trained so
meets the colours between and around its training labs, not only theirs; HED jitter moves the stains, this
moves lightness and saturation too, which the real-tissue model was found to be most sensitive to.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

#: sRGB (linear) to CIE XYZ under D65, and the D65 white point (as scikit-image uses).
_XYZ_FROM_RGB = torch.tensor(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
_RGB_FROM_XYZ = torch.linalg.inv(_XYZ_FROM_RGB)
_WHITE = torch.tensor([0.95047, 1.0, 1.08883])
_EPSILON = 0.008856  # (6/29)^3: where the cube root meets its linear part
_KAPPA = 7.787


def rgb_to_lab(image: torch.Tensor) -> torch.Tensor:
    """Float RGB (3, H, W) in 0..255 to CIE LAB (L in 0..100, a and b about -128..127)."""
    c = (image / 255.0).clamp(0, 1)
    linear = torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = torch.einsum("rc,chw->rhw", _XYZ_FROM_RGB, linear) / _WHITE.view(3, 1, 1)
    f = torch.where(xyz > _EPSILON, xyz.clamp_min(_EPSILON) ** (1 / 3), _KAPPA * xyz + 16 / 116)
    return torch.stack([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE LAB (3, H, W) to float RGB in 0..255 (colours outside sRGB are clipped)."""
    fy = (lab[0] + 16) / 116
    f = torch.stack([lab[1] / 500 + fy, fy, fy - lab[2] / 200])
    xyz = torch.where(f**3 > _EPSILON, f**3, (f - 16 / 116) / _KAPPA) * _WHITE.view(3, 1, 1)
    linear = torch.einsum("rc,chw->rhw", _RGB_FROM_XYZ, xyz).clamp(0, 1)
    c = torch.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear.clamp_min(1e-12) ** (1 / 2.4) - 0.055)
    return (c * 255).clamp(0, 255)


@dataclass(frozen=True)
class LabSpread:
    """How each LAB channel's per-image mean and standard deviation spread over a set of images."""

    mean_of_means: tuple[float, float, float]
    std_of_means: tuple[float, float, float]
    mean_of_stds: tuple[float, float, float]
    std_of_stds: tuple[float, float, float]

    def to_dict(self) -> dict[str, list[float]]:
        return {name: list(getattr(self, name)) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict) -> LabSpread:
        return cls(**{name: tuple(float(v) for v in data[name]) for name in cls.__dataclass_fields__})


def lab_spread(images: Iterable[np.ndarray]) -> LabSpread:
    """The spread of LAB statistics over uint8 RGB (H, W, 3) images."""
    means, stds = [], []
    for pixels in images:
        lab = rgb_to_lab(torch.from_numpy(np.ascontiguousarray(pixels[..., :3])).permute(2, 0, 1).float())
        means.append(lab.mean(dim=(1, 2)))
        stds.append(lab.std(dim=(1, 2)))
    if not means:
        raise ValueError("no image to measure colour statistics on")
    m, s = torch.stack(means), torch.stack(stds)

    def three(t: torch.Tensor) -> tuple[float, float, float]:
        return tuple(round(float(v), 4) for v in t)  # type: ignore[return-value]

    spread = (lambda t: t.std(dim=0)) if len(means) > 1 else (lambda t: torch.zeros(3))
    return LabSpread(three(m.mean(dim=0)), three(spread(m)), three(s.mean(dim=0)), three(spread(s)))


def lab_transfer(image: torch.Tensor, spread: LabSpread, generator: torch.Generator) -> torch.Tensor:
    """Float RGB (3, H, W) 0..255 recoloured to LAB statistics drawn from ``spread`` (one draw per channel)."""
    normal = torch.randn(2, 3, generator=generator)
    target_mean = torch.tensor(spread.mean_of_means) + normal[0] * torch.tensor(spread.std_of_means)
    target_std = (torch.tensor(spread.mean_of_stds) + normal[1] * torch.tensor(spread.std_of_stds)).clamp_min(0.5)
    return lab_recolour(image, target_mean, target_std)


def lab_recolour(image: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Float RGB (3, H, W) 0..255 with each LAB channel given this mean and standard deviation (Reinhard 2001)."""
    lab = rgb_to_lab(image)
    own_mean, own_std = lab.mean(dim=(1, 2)), lab.std(dim=(1, 2)).clamp_min(1e-3)
    mean, std = torch.as_tensor(mean, dtype=lab.dtype), torch.as_tensor(std, dtype=lab.dtype)
    out = (lab - own_mean.view(3, 1, 1)) / own_std.view(3, 1, 1) * std.view(3, 1, 1) + mean.view(3, 1, 1)
    out[0] = out[0].clamp(0, 100)
    return lab_to_rgb(out)
