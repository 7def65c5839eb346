"""Fixtures of the Slack tests: the API tests' Temporal dev server, settings, CDP and SMTP
server, a local stand-in of Slack, and settings that point liftloop at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from liftloop.settings import Settings
from tests.api.conftest import dev_env, engine, settings, smtp, task_queue
from tests.slack.slack_stub import SlackStub
from tests.slack.support import SIGNING_SECRET

__all__ = ["dev_env", "engine", "settings", "smtp", "task_queue"]


@pytest.fixture
def slack() -> Iterator[SlackStub]:
    with SlackStub() as stub:
        yield stub


@pytest.fixture
def slack_settings(settings: Settings, slack: SlackStub) -> Settings:
    """Slack configured: bot token, signing secret and the stand-in's Web API."""
    return settings.model_copy(
        update={
            "slack_bot_token": SecretStr(slack.token),
            "slack_signing_secret": SecretStr(SIGNING_SECRET),
            "slack_base_url": slack.base_url,
            "slack_channel": "#approvals",
            "slack_escalation_channel": "#approvals-leads",
        }
    )
