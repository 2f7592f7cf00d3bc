"""The three cascade stages: RoIAlign on P2-P5, Shared2FC heads (background last), refinement, losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from midog_viewer.detect.box_coder import decode_boxes, encode_boxes
from midog_viewer.detect.config import CascadeConfig
from midog_viewer.detect.nms import batched_nms
from midog_viewer.detect.sampling import assign_max_iou, sample_random


class Shared2FCHead(nn.Module):
    """Flatten (C, 7, 7) → fc6 → ReLU → fc7 → ReLU → class logits (num_classes + 1, background last), 4 deltas."""

    def __init__(self, in_features: int, fc_channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_features, fc_channels)
        self.fc7 = nn.Linear(fc_channels, fc_channels)
        self.cls_score = nn.Linear(fc_channels, num_classes + 1)
        self.bbox_pred = nn.Linear(fc_channels, 4)
        for fc in (self.fc6, self.fc7):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, roi_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = roi_features.flatten(1)
        x = F.relu(self.fc7(F.relu(self.fc6(x))))
        return self.cls_score(x), self.bbox_pred(x)


class CascadeRoIHeads(nn.Module):
    """Stage s runs on stage s-1's regressed boxes; test scores are softmax(mean of the stages' logits)."""

    def __init__(self, cfg: CascadeConfig) -> None:
        super().__init__()
        self.cfg = cfg
        in_features = cfg.fpn_channels * cfg.roi_output_size**2
        self.stages = nn.ModuleList(
            Shared2FCHead(in_features, cfg.fc_channels, cfg.num_classes) for _ in range(cfg.num_stages)
        )

    def roi_features(self, features: list[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        """RoIAlign (aligned, sampling_ratio 0) of rois (K, 5: image index, xyxy) on the level mmdet picks."""
        cfg = self.cfg
        num_levels = len(cfg.roi_strides)
        size = cfg.roi_output_size
        output = features[0].new_zeros((rois.shape[0], features[0].shape[1], size, size))
        if rois.shape[0] == 0:
            return output
        scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
        levels = torch.floor(torch.log2(scale / cfg.roi_finest_scale + 1e-6)).clamp(min=0, max=num_levels - 1).long()
        for level in range(num_levels):
            index = torch.nonzero(levels == level, as_tuple=False).squeeze(1)
            if index.numel():
                pooled = roi_align(
                    features[level],
                    rois[index],
                    output_size=size,
                    spatial_scale=1.0 / cfg.roi_strides[level],
                    sampling_ratio=cfg.roi_sampling_ratio,
                    aligned=True,
                )
                output[index] = pooled.to(output.dtype)
        return output

    def _run_stage(
        self, stage: int, features: list[torch.Tensor], rois: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits, deltas = self.stages[stage](self.roi_features(features, rois))
        return logits.float(), deltas.float()

    @staticmethod
    def _to_rois(boxes_per_image: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(
            [torch.cat([b.new_full((b.shape[0], 1), i), b], dim=1) for i, b in enumerate(boxes_per_image)]
        )

    def predict(
        self,
        features: list[torch.Tensor],
        proposals: list[torch.Tensor],
        image_sizes: list[tuple[int, int]],
    ) -> list[dict[str, torch.Tensor]]:
        """Final boxes, scores and labels per image, as mmdet's ``CascadeRoIHead.predict`` + ``multiclass_nms``."""
        cfg = self.cfg
        counts = [p.shape[0] for p in proposals]
        boxes_per_image = [p.float() for p in proposals]
        stage_logits = []
        deltas = None
        for stage in range(cfg.num_stages):
            logits, deltas = self._run_stage(stage, features, self._to_rois(boxes_per_image))
            stage_logits.append(logits)
            if stage < cfg.num_stages - 1:
                boxes_per_image = [
                    decode_boxes(boxes, d, cfg.stage_target_stds[stage], size)
                    for boxes, d, size in zip(boxes_per_image, deltas.split(counts), image_sizes)
                ]
        probabilities = F.softmax(sum(stage_logits) / float(len(stage_logits)), dim=-1)
        results = []
        for boxes, d, probs, size in zip(boxes_per_image, deltas.split(counts), probabilities.split(counts), image_sizes):
            final_boxes = decode_boxes(boxes, d, cfg.stage_target_stds[-1], size)
            results.append(self._multiclass_nms(final_boxes, probs))
        return results

    def _multiclass_nms(self, boxes: torch.Tensor, probabilities: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each box is a candidate for every class (class-agnostic regression); score > thr, NMS per class."""
        cfg = self.cfg
        num_classes = cfg.num_classes
        scores = probabilities[:, :num_classes].reshape(-1)
        labels = torch.arange(num_classes, device=boxes.device).repeat(boxes.shape[0])
        candidates = boxes[:, None, :].expand(-1, num_classes, 4).reshape(-1, 4)
        valid = torch.nonzero(scores > cfg.test_score_thr, as_tuple=False).squeeze(1)
        candidates, scores, labels = candidates[valid], scores[valid], labels[valid]
        keep = batched_nms(candidates, scores, labels, cfg.test_nms_iou)[: cfg.test_max_per_img]
        return {"boxes": candidates[keep], "scores": scores[keep], "labels": labels[keep]}

    def losses(
        self,
        features: list[torch.Tensor],
        proposals: list[torch.Tensor],
        image_sizes: list[tuple[int, int]],
        targets: list[dict[str, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:
        """Per stage: assign at its IoU, sample, cross-entropy + smooth-L1, weighted; refine the sampled boxes."""
        cfg = self.cfg
        losses: dict[str, torch.Tensor] = {}
        boxes_per_image = [p.detach().float() for p in proposals]
        for stage in range(cfg.num_stages):
            iou = cfg.stage_iou_thresholds[stage]
            stds = cfg.stage_target_stds[stage]
            sampled_boxes, sampled_labels, sampled_targets, from_gt = [], [], [], []
            for boxes, target in zip(boxes_per_image, targets):
                gt_boxes = target["boxes"].to(boxes)
                gt_labels = target["labels"].to(boxes.device).long()
                assigned = assign_max_iou(boxes, gt_boxes, iou, iou, iou, match_low_quality=False)
                # Ground truth joins the proposals as positives (add_gt_as_proposals).
                num_gt = gt_boxes.shape[0]
                assigned = torch.cat([torch.arange(1, num_gt + 1, device=boxes.device), assigned])
                candidates = torch.cat([gt_boxes, boxes])
                is_gt = torch.cat([torch.ones(num_gt, dtype=torch.bool), torch.zeros(boxes.shape[0], dtype=torch.bool)])
                pos, neg = sample_random(assigned, cfg.rcnn_num_samples, cfg.rcnn_pos_fraction)
                order = torch.cat([pos, neg])
                labels = torch.full((order.numel(),), cfg.num_classes, dtype=torch.long, device=boxes.device)
                labels[: pos.numel()] = gt_labels[assigned[pos] - 1]
                box_targets = torch.zeros((order.numel(), 4), device=boxes.device)
                if pos.numel():
                    box_targets[: pos.numel()] = encode_boxes(candidates[pos], gt_boxes[assigned[pos] - 1], stds)
                sampled_boxes.append(candidates[order])
                sampled_labels.append(labels)
                sampled_targets.append(box_targets)
                from_gt.append(is_gt.to(boxes.device)[order])
            logits, deltas = self._run_stage(stage, features, self._to_rois(sampled_boxes))
            labels = torch.cat(sampled_labels)
            box_targets = torch.cat(sampled_targets)
            num_samples = labels.numel()
            positive = labels < cfg.num_classes
            weight = cfg.stage_loss_weights[stage]
            loss_cls = F.cross_entropy(logits, labels, reduction="sum") / max(num_samples, 1)
            loss_box = deltas.sum() * 0.0
            if bool(positive.any()):
                loss_box = loss_box + F.smooth_l1_loss(
                    deltas[positive], box_targets[positive], beta=cfg.rcnn_bbox_beta, reduction="sum"
                ) / max(num_samples, 1)
            losses[f"s{stage}.loss_cls"] = (loss_cls + logits.sum() * 0.0) * weight
            losses[f"s{stage}.loss_bbox"] = loss_box * weight
            if stage < cfg.num_stages - 1:
                with torch.no_grad():
                    counts = [b.shape[0] for b in sampled_boxes]
                    boxes_per_image = [
                        decode_boxes(boxes[~gt], d[~gt], stds, size)
                        for boxes, d, gt, size in zip(sampled_boxes, deltas.detach().split(counts), from_gt, image_sizes)
                    ]
        return losses
