"""Fixtures shared by the test suite: an isolated state folder and a small prepared synthetic dataset."""

from __future__ import annotations

import functools
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import NoReturn

import pytest

from r2ec.data.samples import PreparedData, prepare
from r2ec.data.synthetic import generate_synthetic

SERVERS = {"postgres": ("127.0.0.1", 5432), "redis": ("127.0.0.1", 6379)}


@functools.cache
def _unavailable(marker: str) -> str | None:
    """Why what a marker needs (a server, Chromium for ``browser``, Airflow and its metadata database for
    ``airflow``) is missing; None when it is there."""
    if marker == "browser":
        found = Path("/usr/bin/chromium").exists() and shutil.which("chromedriver")
        return None if found else "chromium or chromedriver is not installed (`make system-deps` as root)"
    if marker == "airflow":
        if not Path(sys.executable).with_name("airflow").exists():
            return "the airflow command is not in this environment (`make install`)"
        marker = "postgres"  # Airflow's metadata database
    host, port = SERVERS[marker]
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as error:
        return f"{marker} server at {host}:{port} is unreachable ({error})"
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test whose server or browser is missing skips with the reason; in CI (``CI`` set) it fails instead."""
    for marker in (*SERVERS, "browser", "airflow"):
        if item.get_closest_marker(marker) and (reason := _unavailable(marker)):
            unavailable(reason)


def unavailable(reason: str) -> NoReturn:
    """Skip a test whose service is missing or could not be started, with the reason; fail instead in CI."""
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"{reason}; CI is set, so the test cannot be skipped", pytrace=False)
    pytest.skip(reason)


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
