"""ResNet / ResNeXt trunk from torchvision (``weights=None``) and mmdet's FPN (P2-P6, nearest upsampling).

Parameter names of the trunk are torchvision's, which are also mmdet's ResNet names, so mmdet checkpoints map
one to one (see :mod:`midog_viewer.detect.mmdet_import`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from midog_viewer.detect.config import STAGE_CHANNELS, CascadeConfig


class ResNetBody(nn.Module):
    """The stem and the first ``cfg.backbone_stages`` residual stages; returns each stage's output."""

    def __init__(self, cfg: CascadeConfig) -> None:
        super().__init__()
        resnet = getattr(torchvision.models, cfg.backbone)(weights=None)
        self.conv1 = resnet.conv1
        self.bn1 = resnet.bn1
        self.relu = resnet.relu
        self.maxpool = resnet.maxpool
        self.stage_names = [f"layer{i}" for i in range(1, cfg.backbone_stages + 1)]
        for name in self.stage_names:
            setattr(self, name, getattr(resnet, name))
        self.out_channels = STAGE_CHANNELS[cfg.block_type][: cfg.backbone_stages]
        self.norm_eval = cfg.norm_eval
        self.frozen_stages = cfg.frozen_stages
        self._freeze()

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        return [self.conv1, self.bn1] + [getattr(self, f"layer{i}") for i in range(1, self.frozen_stages + 1)]

    def _freeze(self) -> None:
        for module in self._frozen_modules():
            for param in module.parameters():
                param.requires_grad_(False)

    def train(self, mode: bool = True) -> ResNetBody:
        """As mmdet: frozen stages and (with norm_eval) every BatchNorm stay in eval mode while training."""
        super().train(mode)
        if mode:
            for module in self._frozen_modules():
                module.eval()
            if self.norm_eval:
                for module in self.modules():
                    if isinstance(module, nn.modules.batchnorm._BatchNorm):
                        module.eval()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outputs = []
        for name in self.stage_names:
            x = getattr(self, name)(x)
            outputs.append(x)
        return outputs


class FPN(nn.Module):
    """mmdet's FPN: 1×1 laterals, top-down nearest upsampling, 3×3 outputs, extra levels by max_pool(k=1, s=2)."""

    def __init__(self, in_channels: tuple[int, ...], out_channels: int, num_outs: int = 5) -> None:
        super().__init__()
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.output_convs = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels)
        self.num_outs = num_outs
        for conv in [*self.lateral_convs, *self.output_convs]:
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[2:], mode="nearest"
            )
        outs = [conv(x) for conv, x in zip(self.output_convs, laterals)]
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return outs


class BackboneWithFPN(nn.Module):
    """Trunk + FPN: an image batch (N, 3, H, W) → five feature maps P2..P6 with ``cfg.fpn_channels`` each."""

    def __init__(self, cfg: CascadeConfig) -> None:
        super().__init__()
        self.body = ResNetBody(cfg)
        self.fpn = FPN(self.body.out_channels, cfg.fpn_channels, num_outs=len(cfg.anchor_strides))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.fpn(self.body(x))
