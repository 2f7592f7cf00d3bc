"""The region proposal network: mmdet's ``RPNHead`` (sigmoid objectness), its proposals and its losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from midog_viewer.detect.anchors import base_anchors, grid_anchors
from midog_viewer.detect.box_coder import decode_boxes, encode_boxes
from midog_viewer.detect.config import CascadeConfig
from midog_viewer.detect.nms import batched_nms
from midog_viewer.detect.sampling import assign_max_iou, sample_random

_UNIT_STDS = (1.0, 1.0, 1.0, 1.0)


class RPN(nn.Module):
    """Shared 3×3 conv + ReLU, then 1×1 objectness (A channels) and 1×1 deltas (4A) on every FPN level."""

    def __init__(self, cfg: CascadeConfig) -> None:
        super().__init__()
        self.cfg = cfg
        num_anchors = len(cfg.anchor_scales) * len(cfg.anchor_ratios)
        self.conv = nn.Conv2d(cfg.fpn_channels, cfg.rpn_feat_channels, 3, padding=1)
        self.cls_logits = nn.Conv2d(cfg.rpn_feat_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(cfg.rpn_feat_channels, num_anchors * 4, 1)
        for conv in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        self._base_anchors = [base_anchors(s, cfg.anchor_scales, cfg.anchor_ratios) for s in cfg.anchor_strides]

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per level: objectness logits (N, A, H, W) and deltas (N, 4A, H, W)."""
        logits, deltas = [], []
        for feature in features:
            hidden = F.relu(self.conv(feature))
            logits.append(self.cls_logits(hidden))
            deltas.append(self.bbox_pred(hidden))
        return logits, deltas

    def anchors(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """(H*W*A, 4) anchors of each level."""
        return [
            grid_anchors(base, tuple(f.shape[-2:]), stride, f.device)
            for base, f, stride in zip(self._base_anchors, features, self.cfg.anchor_strides)
        ]

    def proposals(
        self,
        logits: list[torch.Tensor],
        deltas: list[torch.Tensor],
        anchors: list[torch.Tensor],
        image_sizes: list[tuple[int, int]],
        training: bool,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per image, (boxes (K, 4), scores (K,)): top ``nms_pre`` per level, decoded, NMS 0.7 per level, top K."""
        cfg = self.cfg
        nms_pre = cfg.rpn_train_nms_pre if training else cfg.rpn_test_nms_pre
        max_per_img = cfg.rpn_train_max_per_img if training else cfg.rpn_test_max_per_img
        results = []
        for index, image_size in enumerate(image_sizes):
            level_scores, level_deltas, level_priors, level_ids = [], [], [], []
            for level, (logit, delta, prior) in enumerate(zip(logits, deltas, anchors)):
                scores = logit[index].permute(1, 2, 0).reshape(-1).float().sigmoid()
                box_deltas = delta[index].permute(1, 2, 0).reshape(-1, 4).float()
                if 0 < nms_pre < scores.shape[0]:
                    scores, order = scores.sort(descending=True)
                    scores = scores[:nms_pre]
                    order = order[:nms_pre]
                    box_deltas = box_deltas[order]
                    prior = prior[order]
                level_scores.append(scores)
                level_deltas.append(box_deltas)
                level_priors.append(prior)
                level_ids.append(torch.full_like(scores, level, dtype=torch.long))
            scores = torch.cat(level_scores)
            ids = torch.cat(level_ids)
            boxes = decode_boxes(torch.cat(level_priors), torch.cat(level_deltas), _UNIT_STDS, image_size)
            valid = ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)
            if not bool(valid.all()):
                boxes, scores, ids = boxes[valid], scores[valid], ids[valid]
            keep = batched_nms(boxes, scores, ids, cfg.rpn_nms_iou)[:max_per_img]
            results.append((boxes[keep], scores[keep]))
        return results

    def losses(
        self,
        logits: list[torch.Tensor],
        deltas: list[torch.Tensor],
        anchors: list[torch.Tensor],
        image_sizes: list[tuple[int, int]],
        targets: list[dict[str, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:
        """Sigmoid cross-entropy on 256 sampled anchors per image and smooth-L1 (β 1/9) on the positives."""
        cfg = self.cfg
        all_anchors = torch.cat(anchors)
        cls_terms, box_terms = [], []
        num_samples = 0
        for index, (height, width) in enumerate(image_sizes):
            image_logits = torch.cat([lg[index].permute(1, 2, 0).reshape(-1) for lg in logits])
            image_deltas = torch.cat([d[index].permute(1, 2, 0).reshape(-1, 4) for d in deltas])
            border = cfg.rpn_allowed_border
            inside = (
                (all_anchors[:, 0] >= -border)
                & (all_anchors[:, 1] >= -border)
                & (all_anchors[:, 2] < width + border)
                & (all_anchors[:, 3] < height + border)
            )
            inside_index = torch.nonzero(inside, as_tuple=False).squeeze(1)
            gt_boxes = targets[index]["boxes"].to(all_anchors)
            assigned = assign_max_iou(
                all_anchors[inside_index],
                gt_boxes,
                cfg.rpn_pos_iou,
                cfg.rpn_neg_iou,
                cfg.rpn_min_pos_iou,
                match_low_quality=True,
            )
            pos, neg = sample_random(assigned, cfg.rpn_num_samples, cfg.rpn_pos_fraction)
            sampled = torch.cat([inside_index[pos], inside_index[neg]])
            labels = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)]).float()
            cls_terms.append(
                F.binary_cross_entropy_with_logits(image_logits[sampled].float(), labels, reduction="sum")
            )
            if pos.numel():
                pos_anchors = all_anchors[inside_index[pos]]
                box_targets = encode_boxes(pos_anchors, gt_boxes[assigned[pos] - 1], _UNIT_STDS)
                box_terms.append(
                    F.smooth_l1_loss(
                        image_deltas[inside_index[pos]].float(), box_targets, beta=cfg.rpn_bbox_beta, reduction="sum"
                    )
                )
            num_samples += sampled.numel()
        zero = sum(d.sum() for d in deltas) * 0.0 + sum(lg.sum() for lg in logits) * 0.0
        avg_factor = max(num_samples, 1)
        return {
            "loss_rpn_cls": (sum(cls_terms) + zero) / avg_factor,
            "loss_rpn_bbox": (sum(box_terms) + zero) / avg_factor,
        }
