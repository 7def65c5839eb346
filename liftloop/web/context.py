"""What the pages need from the app that mounts them (`create_app`), in one object."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from temporalio.client import Client

from approvals.notify import ApprovalNotifier
from liftloop.settings import Settings
from tools.audit import AuditLog


@dataclass(frozen=True)
class WebContext:
    settings: Settings
    engine: Engine
    audit: AuditLog
    # The app's lazily connected client: pages that need no workflow never wait for Temporal.
    temporal: Callable[[], Awaitable[Client]]
    approval_signing_key: bytes
    notifier: ApprovalNotifier


def get_web_context() -> WebContext:
    """Overridden by `create_app`; without it no page can reach the app's state."""
    raise RuntimeError("the web router needs create_app's WebContext")
