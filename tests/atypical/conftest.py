"""Tiny rated crop sets in the real_mitosis layout, drawn in tmp_path, and a tiny classifier trained on them."""

from __future__ import annotations

from pathlib import Path

import pytest
from atypical_fixtures import TINY, make_crop_folder


@pytest.fixture(scope="session")
def crop_folder(tmp_path_factory) -> Path:
    return make_crop_folder(tmp_path_factory.mktemp("crops"))


@pytest.fixture(scope="session")
def tiny_run(crop_folder, tmp_path_factory):
    from midog_viewer.atypical.model import AtypicalConfig
    from midog_viewer.atypical.train import AtypicalRecipe, train_atypical

    out = tmp_path_factory.mktemp("run") / "run"
    recipe = AtypicalRecipe(epochs=3, batch_size=8, lr=5e-3, val_fraction=0.4, log_every=2)
    return train_atypical(crop_folder, out, recipe=recipe, config=AtypicalConfig(**TINY))
