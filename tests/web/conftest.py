"""Fixtures of the web app's tests: those of the API tests (Temporal's real dev server, settings
and a CDP per test, an SMTP server)."""

from __future__ import annotations

from tests.api.conftest import (  # noqa: F401  (fixtures)
    dev_env,
    engine,
    settings,
    smtp,
    task_queue,
)
