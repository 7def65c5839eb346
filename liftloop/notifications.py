"""The approval notifier the worker and the API use, chosen by settings: Slack when a bot token
is set, else none (the inbox, the API and the CLI still show every request)."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from approvals.notify import ApprovalNotifier, NoNotifier
from approvals.slack_notify import SlackNotifier
from connectors.slack import SlackWebApi
from liftloop.settings import Settings


def slack_api(settings: Settings) -> SlackWebApi:
    """Slack's Web API with the bot token (empty: only response_urls can be answered)."""
    return SlackWebApi(settings.slack_bot_token.get_secret_value(), settings.slack_base_url)


def approval_notifier(settings: Settings, engine: Engine) -> ApprovalNotifier:
    if not settings.slack_bot_token.get_secret_value():
        return NoNotifier()
    return SlackNotifier(
        engine,
        slack_api(settings),
        default_channel=settings.slack_channel,
        escalation_channel=settings.slack_escalation_channel or None,
    )
