"""The model a run trains: a fresh named configuration, or any loadable checkpoint to fine-tune."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from midog_viewer.detect.checkpoint import load_model, save_checkpoint
from midog_viewer.detect.config import CascadeConfig
from midog_viewer.detect.model import build_cascade_rcnn
from midog_viewer.errors import ModelError, TrainingError


def build_model(
    config: str | None, init: str | Path | None, overrides: dict[str, Any] | None = None
) -> tuple[torch.nn.Module, CascadeConfig]:
    """The model and its configuration: ``init``'s weights and architecture if given, else a fresh ``config``.

    A checkpoint's architecture wins over ``config``; naming a different architecture is refused
    rather than silently ignored. mmdet checkpoints load through the detector's importer.
    ``overrides`` (training-time sampling sizes) change the built model, not the returned configuration,
    which is what checkpoints record.
    """
    named = None
    if config is not None:
        try:
            named = CascadeConfig.named(config)
        except ModelError as exc:
            raise TrainingError(str(exc)) from exc
    if init is None:
        if named is None:
            raise TrainingError("name a model configuration or a checkpoint to start from.")
        return build_cascade_rcnn(dataclasses.replace(named, **(overrides or {}))), named
    try:
        model, info = load_model(init)
    except ModelError as exc:
        raise TrainingError(f"cannot fine-tune from {init}: {exc}") from exc
    if named is not None and (named.backbone, named.fpn_channels) != (info.config.backbone, info.config.fpn_channels):
        raise TrainingError(
            f"--config {config} ({named.backbone}) does not match the checkpoint {init} "
            f"({info.config.backbone}); leave --config out to fine-tune the checkpoint's architecture."
        )
    if overrides:
        weights = model.state_dict()
        model = build_cascade_rcnn(dataclasses.replace(info.config, **overrides))
        model.load_state_dict(weights)
    return model, info.config


def write_checkpoint(model: torch.nn.Module, config: CascadeConfig, path: Path, provenance: dict[str, Any]) -> None:
    """Save in the detector's format via a temporary file, so a reader never sees half a checkpoint."""
    tmp = path.with_name(path.stem + ".tmp.safetensors")
    save_checkpoint(model, tmp, config, provenance)
    tmp.replace(path)
