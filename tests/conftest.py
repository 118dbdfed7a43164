"""Fixtures shared by the test suite: an isolated state folder and a small prepared synthetic dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

from r2ec.data.samples import PreparedData, prepare
from r2ec.data.synthetic import generate_synthetic


@pytest.fixture
def r2ec_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh state folder, set as ``R2EC_HOME`` so nothing is written under ./var."""
    home = tmp_path / "r2ec-home"
    monkeypatch.setenv("R2EC_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def synthetic_data() -> PreparedData:
    """The registered ``synthetic`` dataset (default size), split as method.md §4 says."""
    interactions, items = generate_synthetic()
    return prepare("synthetic", interactions, items)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Model cache of the test session: holds the SmolLM2 tokenizer that tiny random models use."""
    return tmp_path_factory.mktemp("model-cache")
