"""mmdet's ``AnchorGenerator``: unrounded base anchors centred on (0, 0), shifted by ``arange(W) * stride``.

torchvision rounds its base anchors, which moves every RPN proposal; this generator does not.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def base_anchors(stride: int, scales: Sequence[float], ratios: Sequence[float]) -> torch.Tensor:
    """(A, 4) anchors of one level, ordered ratio-major then scale, as mmdet's ``scale_major=True``."""
    ratios_t = torch.tensor(ratios, dtype=torch.float32)
    scales_t = torch.tensor(scales, dtype=torch.float32)
    h_ratios = torch.sqrt(ratios_t)
    w_ratios = 1 / h_ratios
    ws = (stride * w_ratios[:, None] * scales_t[None, :]).view(-1)
    hs = (stride * h_ratios[:, None] * scales_t[None, :]).view(-1)
    return torch.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], dim=-1)


def grid_anchors(
    base: torch.Tensor, feat_size: tuple[int, int], stride: int, device: torch.device
) -> torch.Tensor:
    """(H*W*A, 4) anchors for a feature map of ``feat_size`` = (H, W): location-major (y, then x), anchor-minor."""
    feat_h, feat_w = feat_size
    shift_x = torch.arange(0, feat_w, device=device).to(torch.float32) * stride
    shift_y = torch.arange(0, feat_h, device=device).to(torch.float32) * stride
    shift_yy, shift_xx = torch.meshgrid(shift_y, shift_x, indexing="ij")
    shift_xx = shift_xx.reshape(-1)
    shift_yy = shift_yy.reshape(-1)
    shifts = torch.stack([shift_xx, shift_yy, shift_xx, shift_yy], dim=-1)
    return (base.to(device)[None, :, :] + shifts[:, None, :]).view(-1, 4)
