"""Training-time matching of priors to ground truth: mmdet's ``MaxIoUAssigner`` and ``RandomSampler``."""

from __future__ import annotations

import torch
from torchvision.ops import box_iou


def assign_max_iou(
    priors: torch.Tensor,
    gt_boxes: torch.Tensor,
    pos_iou: float,
    neg_iou: float,
    min_pos_iou: float,
    match_low_quality: bool,
) -> torch.Tensor:
    """Per prior: 0 = background, -1 = ignored, k > 0 = matched to ground-truth box k-1."""
    num_priors = priors.shape[0]
    assigned = torch.full((num_priors,), -1, dtype=torch.long, device=priors.device)
    if gt_boxes.shape[0] == 0 or num_priors == 0:
        assigned[:] = 0
        return assigned
    overlaps = box_iou(gt_boxes.float(), priors.float())  # (num_gt, num_priors)
    max_overlaps, argmax_overlaps = overlaps.max(dim=0)
    assigned[(max_overlaps >= 0) & (max_overlaps < neg_iou)] = 0
    positive = max_overlaps >= pos_iou
    assigned[positive] = argmax_overlaps[positive] + 1
    if match_low_quality:
        gt_max_overlaps, _ = overlaps.max(dim=1)
        for gt_index in range(gt_boxes.shape[0]):
            if gt_max_overlaps[gt_index] >= min_pos_iou:
                assigned[overlaps[gt_index] == gt_max_overlaps[gt_index]] = gt_index + 1
    return assigned


def sample_random(assigned: torch.Tensor, num: int, pos_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of sampled positives and negatives: at most ``num * pos_fraction`` positives, negatives fill up."""
    positives = torch.nonzero(assigned > 0, as_tuple=False).squeeze(1)
    negatives = torch.nonzero(assigned == 0, as_tuple=False).squeeze(1)
    num_pos = int(num * pos_fraction)
    if positives.numel() > num_pos:
        positives = positives[torch.randperm(positives.numel(), device=positives.device)[:num_pos]]
    num_neg = num - positives.numel()
    if negatives.numel() > num_neg:
        negatives = negatives[torch.randperm(negatives.numel(), device=negatives.device)[:num_neg]]
    return positives, negatives
