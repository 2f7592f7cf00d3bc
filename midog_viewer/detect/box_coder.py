"""mmdet's ``DeltaXYWHBBoxCoder``: box deltas with per-stage standard deviations, no +1 on widths.

Decoding clamps dw/dh on both sides to ±|log(16/1000)| and clips to the image (``[0, W] × [0, H]``), which
torchvision's BoxCoder does not, so the cascade reproduces mmdet's boxes exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

_MAX_RATIO = abs(math.log(16.0 / 1000.0))


def encode_boxes(priors: torch.Tensor, gt: torch.Tensor, stds: Sequence[float]) -> torch.Tensor:
    """Deltas (N, 4) that move ``priors`` (N, 4 xyxy) onto ``gt`` (N, 4 xyxy), divided by ``stds``."""
    priors = priors.float()
    gt = gt.float()
    pw = priors[:, 2] - priors[:, 0]
    ph = priors[:, 3] - priors[:, 1]
    px = (priors[:, 0] + priors[:, 2]) * 0.5
    py = (priors[:, 1] + priors[:, 3]) * 0.5
    gw = gt[:, 2] - gt[:, 0]
    gh = gt[:, 3] - gt[:, 1]
    gx = (gt[:, 0] + gt[:, 2]) * 0.5
    gy = (gt[:, 1] + gt[:, 3]) * 0.5
    deltas = torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], dim=1)
    return deltas / deltas.new_tensor(stds).view(1, 4)


def decode_boxes(
    priors: torch.Tensor,
    deltas: torch.Tensor,
    stds: Sequence[float],
    max_shape: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Apply ``deltas`` (N, 4, normalised) to ``priors`` (N, 4 xyxy); clip to ``max_shape`` = (H, W) if given."""
    if deltas.shape[0] == 0:
        return deltas.reshape(0, 4)
    denorm = deltas * deltas.new_tensor(stds).view(1, 4)
    pxy = (priors[:, :2] + priors[:, 2:]) * 0.5
    pwh = priors[:, 2:] - priors[:, :2]
    gxy = pxy + pwh * denorm[:, :2]
    gwh = pwh * denorm[:, 2:].clamp(min=-_MAX_RATIO, max=_MAX_RATIO).exp()
    boxes = torch.cat([gxy - gwh * 0.5, gxy + gwh * 0.5], dim=-1)
    if max_shape is not None:
        height, width = max_shape
        boxes[:, 0::2] = boxes[:, 0::2].clamp(min=0, max=width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(min=0, max=height)
    return boxes
