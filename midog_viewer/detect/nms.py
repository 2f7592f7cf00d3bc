"""Class-aware NMS exactly as mmcv's ``batched_nms`` (one NMS over boxes offset per class)."""

from __future__ import annotations

import torch
from torchvision.ops import nms


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Indices kept by NMS within each group, in descending score order.

    mmcv shifts each group's boxes by ``group * (max_coordinate + 1)`` and runs one NMS; doing the same (rather
    than torchvision's per-class loop on large inputs) keeps the float rounding, hence the kept set, identical.
    """
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.long, device=boxes.device)
    boxes = boxes.float()
    offsets = groups.to(boxes) * (boxes.max() + 1)
    return nms(boxes + offsets[:, None], scores.float(), iou_threshold)
