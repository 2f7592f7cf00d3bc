"""The Cascade R-CNN module and its builder, with mmdet's input conventions inside the model."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from midog_viewer.detect.backbone import BackboneWithFPN
from midog_viewer.detect.config import CascadeConfig
from midog_viewer.detect.roi_heads import CascadeRoIHeads
from midog_viewer.detect.rpn import RPN
from midog_viewer.errors import ModelError


class CascadeRCNN(nn.Module):
    """ResNet/ResNeXt-FPN, RPN and a three-stage cascade; see :func:`build_cascade_rcnn` for the contract."""

    def __init__(self, cfg: CascadeConfig) -> None:
        super().__init__()
        self.config = cfg
        self.backbone = BackboneWithFPN(cfg)
        self.rpn = RPN(cfg)
        self.roi_heads = CascadeRoIHeads(cfg)
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std).view(3, 1, 1), persistent=False)

    def preprocess(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Normalise each RGB 0..255 image, pad bottom/right with 0 to a common multiple of 32, stack."""
        if not images:
            raise ModelError("the detector needs at least one image.")
        for image in images:
            if image.dim() != 3 or image.shape[0] != 3:
                raise ModelError(f"each image must be a (3, H, W) RGB tensor, not {tuple(image.shape)}.")
        sizes = [(int(im.shape[1]), int(im.shape[2])) for im in images]
        divisor = self.config.pad_size_divisor
        height = int(math.ceil(max(h for h, _ in sizes) / divisor) * divisor)
        width = int(math.ceil(max(w for _, w in sizes) / divisor) * divisor)
        batch = torch.stack(
            [
                F.pad((im.to(self.pixel_mean) - self.pixel_mean) / self.pixel_std, (0, width - w, 0, height - h))
                for im, (h, w) in zip(images, sizes)
            ]
        )
        if self.backbone.body.conv1.weight.is_contiguous(memory_format=torch.channels_last):
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch, sizes

    def forward(
        self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None
    ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        batch, sizes = self.preprocess(images)
        features = self.backbone(batch)
        logits, deltas = self.rpn(features)
        anchors = self.rpn.anchors(features)
        roi_features = features[: len(self.config.roi_strides)]
        if self.training:
            if targets is None or len(targets) != len(images):
                raise ModelError("training needs one target dict (boxes, labels) per image.")
            losses = self.rpn.losses(logits, deltas, anchors, sizes, targets)
            with torch.no_grad():
                proposals = self.rpn.proposals(
                    [lg.detach() for lg in logits], [d.detach() for d in deltas], anchors, sizes, training=True
                )
            losses.update(self.roi_heads.losses(roi_features, [boxes for boxes, _ in proposals], sizes, targets))
            return losses
        proposals = self.rpn.proposals(logits, deltas, anchors, sizes, training=False)
        return self.roi_heads.predict(roi_features, [boxes for boxes, _ in proposals], sizes)


def build_cascade_rcnn(cfg: CascadeConfig) -> CascadeRCNN:
    """Build a randomly initialised Cascade R-CNN (torchvision backbone with ``weights=None``).

    Tensor contract (torchvision-style)::

        model.train(); losses: dict[str, Tensor] = model(images, targets)
        model.eval();  outputs: list[dict] = model(images)

    * ``images``: list of float tensors (3, H, W), RGB on the 0..255 scale, any size. Mean/std normalisation
      and zero padding to a multiple of 32 happen inside the model (mmdet's DetDataPreprocessor); images are
      not resized.
    * ``targets``: one dict per image: ``boxes`` float (N, 4) xyxy pixels, ``labels`` int64 (N,) in
      ``0..num_classes-1`` (0 = "mitotic figure", 1 = "hard negative", see ``cfg.class_names``); N may be 0.
    * ``losses``: scalar tensors ``loss_rpn_cls``, ``loss_rpn_bbox`` and ``s{0,1,2}.loss_cls``,
      ``s{0,1,2}.loss_bbox`` with the stage weights (1, 0.5, 0.25) already applied: the training loss is their
      sum. Box losses are exactly 0 for images without ground truth.
    * ``outputs``: per image ``boxes`` float (N, 4) xyxy in input pixels (clipped to the image), ``scores``
      float (N,) = softmax of the mean of the three stages' logits, ``labels`` int64 (N,); at most
      ``cfg.test_max_per_img`` with score > ``cfg.test_score_thr``, NMS ``cfg.test_nms_iou`` per class,
      sorted by descending score.
    """
    cfg.validate()
    return CascadeRCNN(cfg)
