"""The Temporal client of the commands that talk to campaigns, and running them."""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from liftloop.cli import output
from liftloop.settings import Settings

T = TypeVar("T")


def actor() -> str:
    """Who the audit log names for a CLI command: the account that runs it."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name and no passwd entry (a bare container)
        return "cli"


def run(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a command's coroutine to its end."""
    return asyncio.run(make())


async def connect(settings: Settings, *, as_json: bool = False) -> Any:
    """A Temporal client, or the command fails (runtime failure) telling how to start it."""
    from liftloop.temporal import connect, forward_temporal_logs

    forward_temporal_logs()
    try:
        return await connect(settings)
    except Exception as exc:
        output.fail(
            f"temporal at {settings.temporal_target}",
            f"{exc}. Start it with `liftloop up`.",
            as_json=as_json,
            code=output.FAILURE,
        )
