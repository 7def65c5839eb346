"""The Slack notifier against the stand-in: one post per request however often it is told,
the route's channel, escalation to the escalation channel (or the thread), the decided update,
and Slack's failures logged without failing anyone."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine

from approvals.notify import NoNotifier
from approvals.slack_notify import SlackNotifier, posted_message
from approvals.slack_tables import SlackEscalation, SlackMessage
from connectors.slack import SlackWebApi
from liftloop.notifications import approval_notifier
from liftloop.settings import Settings
from tests.slack.helpers import add_request, set_status
from tests.slack.slack_stub import SlackStub, channel_id
from tools.cdp.sql import insert


def _notifier(engine: Engine, slack: SlackStub, escalation: str | None = "#leads") -> SlackNotifier:
    api = SlackWebApi(slack.token, slack.base_url, sleep=lambda s: None)
    return SlackNotifier(engine, api, "#approvals", escalation)


def test_settings_choose_the_notifier(
    settings: Settings, slack_settings: Settings, engine: Engine
) -> None:
    assert isinstance(approval_notifier(settings, engine), NoNotifier)
    assert isinstance(approval_notifier(slack_settings, engine), SlackNotifier)


def test_a_request_is_posted_once_however_often_it_is_opened(
    engine: Engine, slack: SlackStub
) -> None:
    rid = add_request(engine, "once")
    routed = add_request(engine, "routed", slack_channel="#approvals-de")
    notifier = _notifier(engine, slack)
    notifier.opened([rid, routed])
    notifier.opened([rid, routed])  # a retried activity
    _notifier(engine, slack).opened([rid])  # another worker process
    posts = slack.calls("chat.postMessage")
    assert [p.body["channel"] for p in posts] == ["#approvals", "#approvals-de"]
    blocks = json.dumps(posts[0].body["blocks"])
    assert rid in blocks and "Hello {first_name}" in blocks and '"approve"' in blocks


def test_concurrent_opens_post_once(engine: Engine, slack: SlackStub) -> None:
    rid = add_request(engine, "racing")

    async def both() -> None:
        notifiers = [_notifier(engine, slack) for _ in range(4)]
        await asyncio.gather(*(asyncio.to_thread(n.opened, [rid]) for n in notifiers))

    asyncio.run(both())
    assert len(slack.calls("chat.postMessage")) == 1


def test_escalation_posts_to_the_escalation_channel(engine: Engine, slack: SlackStub) -> None:
    rid = add_request(engine, "esc")
    notifier = _notifier(engine, slack)
    notifier.opened([rid])
    set_status(engine, rid, escalated_at=datetime.now(UTC))
    notifier.escalated([rid])
    notifier.escalated([rid])
    posts = slack.calls("chat.postMessage")
    assert [p.body["channel"] for p in posts] == ["#approvals", "#leads"]
    assert "Escalated to leads" in json.dumps(posts[1].body["blocks"])
    # The original now names the escalation group as allowed to decide; its buttons stay.
    [update] = slack.calls("chat.update")
    assert "approvers or leads" in json.dumps(update.body["blocks"])
    assert '"approve"' in json.dumps(update.body["blocks"])


def test_without_an_escalation_channel_it_replies_in_the_thread(
    engine: Engine, slack: SlackStub
) -> None:
    rid = add_request(engine, "thread")
    notifier = _notifier(engine, slack, escalation=None)
    notifier.opened([rid])
    notifier.escalated([rid])
    _, reply = slack.calls("chat.postMessage")
    assert reply.body["channel"] == channel_id("#approvals")
    assert reply.body["thread_ts"] and reply.body["reply_broadcast"] is True


def test_a_decided_request_has_its_messages_updated(engine: Engine, slack: SlackStub) -> None:
    rid = add_request(engine, "decided")
    notifier = _notifier(engine, slack)
    notifier.opened([rid])
    notifier.escalated([rid])
    set_status(engine, rid, status="rejected", decided_by="lead", note="too generous")
    notifier.decided(rid)
    notifier.flush()
    updates = slack.wait_for("chat.update", 3)  # the escalation mark, then both messages
    decided = [u for u in updates if "Rejected by lead" in json.dumps(u.body["blocks"])]
    where = {posted_message(engine, t, rid) for t in (SlackMessage, SlackEscalation)}
    assert {(u.body["channel"], u.body["ts"]) for u in decided} == where and len(where) == 2
    for u in decided:
        blocks = json.dumps(u.body["blocks"])
        assert "too generous" in blocks and '"actions"' not in blocks


def test_decided_waits_for_the_commit_it_was_told_of(engine: Engine, slack: SlackStub) -> None:
    """The worker tells of a timeout inside the transaction that writes it."""
    rid = add_request(engine, "late")
    notifier = _notifier(engine, slack)
    notifier.opened([rid])
    notifier.decided(rid)  # still pending here
    set_status(engine, rid, status="rejected", decided_by="system:timeout", note="none")
    notifier.flush()
    [update] = slack.wait_for("chat.update")
    assert "Expired" in json.dumps(update.body["blocks"])


def test_slack_failures_are_logged_and_never_raised(
    engine: Engine, slack: SlackStub, caplog: pytest.LogCaptureFixture
) -> None:
    gone = add_request(engine, "gone", slack_channel="#gone")
    fine = add_request(engine, "fine")
    slack.missing_channels.add("#gone")
    notifier = _notifier(engine, slack)
    with caplog.at_level(logging.WARNING, logger="liftloop.slack"):
        notifier.opened([gone, fine])  # one channel's error does not stop the others
    assert [p.body["channel"] for p in slack.calls("chat.postMessage")] == ["#gone", "#approvals"]
    assert f"{gone} failed (channel_not_found)" in caplog.text
    assert "Hello" not in caplog.text  # nothing of the message
    # The failed post released its claim: once the channel exists, it is posted.
    slack.missing_channels.clear()
    notifier.opened([gone])
    assert len(slack.calls("chat.postMessage")) == 3


def test_a_down_slack_stops_the_batch(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    ids = [add_request(engine, f"down{i}") for i in range(3)]
    with SlackStub() as gone:
        url = gone.base_url
    notifier = SlackNotifier(engine, SlackWebApi("xoxb-x", url, timeout_s=2), "#approvals")
    with caplog.at_level(logging.WARNING, logger="liftloop.slack"):
        notifier.opened(ids)
    assert "(unreachable)" in caplog.text and "2 more requests not tried" in caplog.text
    with engine.connect() as conn:  # no claim is left behind
        assert conn.execute(SlackMessage.__table__.select()).all() == []  # type: ignore[attr-defined]


def test_a_claim_left_by_a_dead_post_is_taken_over(engine: Engine, slack: SlackStub) -> None:
    rid = add_request(engine, "stale")
    with engine.begin() as conn:
        conn.execute(
            insert(conn, SlackMessage).values(
                request_id=rid, posted_at=datetime.now(UTC) - timedelta(minutes=5)
            )
        )
    fresh = add_request(engine, "fresh")
    with engine.begin() as conn:  # a post under way right now
        conn.execute(
            insert(conn, SlackMessage).values(request_id=fresh, posted_at=datetime.now(UTC))
        )
    _notifier(engine, slack).opened([rid, fresh])
    assert len(slack.calls("chat.postMessage")) == 1
    assert posted_message(engine, SlackMessage, rid) is not None
