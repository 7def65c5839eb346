"""Fixtures of the security tests: the loop's real Temporal dev server, settings and CDP per
test (tests/loop/conftest.py), and an environment without any LIFTLOOP_ setting."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.loop.conftest import (  # noqa: F401  (fixtures)
    dev_env,
    engine,
    settings,
    smtp,
    smtp_port,
    task_queue,
)


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No LIFTLOOP_ variable and no .env file in reach: what a first run sees."""
    for name in list(os.environ):
        if name.startswith("LIFTLOOP_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
