"""The Temporal client of the commands that talk to campaigns, and running them."""

from __future__ import annotations

import asyncio
import getpass
import os
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from liftloop.cli import output
from liftloop.settings import Settings

if TYPE_CHECKING:
    from liftloop.accounts.users import UserView

T = TypeVar("T")


TOKEN_ENV = "LIFTLOOP_TOKEN"


def signed_in(settings: Settings) -> UserView | None:
    """The user whose personal token `LIFTLOOP_TOKEN` holds, None without one; a token that
    is unknown, revoked or of a disabled user fails the command."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        return None
    from liftloop.accounts.tokens import user_for_token
    from liftloop.db import engine_for

    user = user_for_token(engine_for(settings.cdp_url), token)
    if user is None:
        output.fail(TOKEN_ENV, "unknown, revoked or disabled personal token")
    return user


def actor(settings: Settings | None = None) -> str:
    """Who starts or steers a campaign from the CLI: the user of `LIFTLOOP_TOKEN` (a manager),
    else the account that runs it."""
    user = signed_in(settings) if settings is not None else None
    if user is not None:
        if user.role != "manager":
            output.fail(TOKEN_ENV, f"{user.name} is a {user.role}; managers steer campaigns")
        return user.name
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
