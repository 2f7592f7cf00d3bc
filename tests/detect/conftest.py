"""Fixtures for the detector tests: a tiny model and images small enough for two CPU cores."""

from __future__ import annotations

import pytest
import torch

from midog_viewer.detect import CascadeConfig, build_cascade_rcnn


@pytest.fixture
def tiny_config() -> CascadeConfig:
    return CascadeConfig.named("tiny")


@pytest.fixture
def tiny_model(tiny_config: CascadeConfig):
    torch.manual_seed(0)
    return build_cascade_rcnn(tiny_config)


@pytest.fixture
def tiny_checkpoint(tiny_model, tiny_config, tmp_path):
    from midog_viewer.detect import save_checkpoint

    return save_checkpoint(tiny_model, tmp_path / "tiny.safetensors", tiny_config, {"purpose": "tests"})
