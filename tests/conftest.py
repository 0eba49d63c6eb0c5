"""Shared fixtures: a tiny space file and an isolated cache folder."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_SPACE = """
from blocksearch import PlacementSearch, Space, TrainConfig
from blocksearch.presets import PRESETS

SPACE = Space(
    name="tiny",
    depths=(2, 3),
    search=PlacementSearch(activation="tanh"),
    presets=PRESETS,
    width=16,
    dataset="synthetic",
    validation_size=128,
    train=TrainConfig(epochs=2, batch_size=64),
    trials=4,
)
"""


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path_factory, monkeypatch):
    """Keep caches and dataset choice of the machine out of every test."""
    monkeypatch.setenv("BLOCKSEARCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("BLOCKSEARCH_DATA", raising=False)


@pytest.fixture
def tiny_space(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.py"
    path.write_text(TINY_SPACE)
    return path
