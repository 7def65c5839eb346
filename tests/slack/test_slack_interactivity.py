"""`POST /slack/interactivity` without a campaign: only requests Slack signed, recently and for
the first time, are read (401 otherwise, and nothing is decided); a Slack user who is no
liftloop user, or whom the rules refuse, is told so and nothing is decided; Reject asks for a
reason in a modal, and a submission without one is refused in the modal."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.engine import Engine

from approvals.requests import get_approval
from liftloop.api import create_app
from liftloop.settings import Settings
from tests.accounts_support import user_token
from tests.api.helpers import assert_error_shape
from tests.slack.helpers import add_request
from tests.slack.slack_stub import SlackStub, block_action, form, sign, view_submission
from tests.slack.support import ROUTE, SIGNING_SECRET, http_for, post_signed


def _no_reply(slack: SlackStub) -> None:
    assert [c for c in slack.calls() if c.method.startswith("hook:")] == []


def _reply(slack: SlackStub, name: str) -> dict[str, object]:
    [call] = slack.calls(f"hook:{name}")
    return call.body


@pytest.fixture
def request_id(engine: Engine) -> str:
    return add_request(engine, "slackui", started_by="maya")


@pytest.mark.parametrize(
    "case",
    ["missing", "wrong-secret", "tampered", "stale", "future", "malformed", "not-hex", "latin-1"],
)
async def test_a_request_slack_did_not_sign_is_401_and_decides_nothing(
    slack_settings: Settings, engine: Engine, slack: SlackStub, request_id: str, case: str
) -> None:
    user_token(engine, "lead", "approver", slack_id="U0LEAD")
    body = form(block_action("U0LEAD", "approve", request_id, response_url=slack.response_url("r")))
    good = sign(SIGNING_SECRET, body)
    now = int(time.time())
    headers = httpx.Headers({"Content-Type": "application/x-www-form-urlencoded"})
    if case == "wrong-secret":
        headers = httpx.Headers(sign("the-secret-of-someone-else", body))
    elif case == "tampered":
        headers = httpx.Headers(good)
        body = body.replace(b"approve", b"APPROVE", 1)
    elif case == "stale":
        headers = httpx.Headers(sign(SIGNING_SECRET, body, now - 301))
    elif case == "future":
        headers = httpx.Headers(sign(SIGNING_SECRET, body, now + 120))
    elif case == "malformed":
        headers = httpx.Headers({**good, "X-Slack-Request-Timestamp": "soon"})
    elif case == "not-hex":
        headers = httpx.Headers({**good, "X-Slack-Signature": "v0=" + "g" * 64})
    elif case == "latin-1":
        raw = {k.encode(): v.encode() for k, v in good.items() if k != "X-Slack-Signature"}
        headers = httpx.Headers({**raw, b"X-Slack-Signature": ("v0=" + "é" * 64).encode("latin-1")})
    async with http_for(create_app(slack_settings)) as http:
        answer = await http.post(ROUTE, content=body, headers=headers)
    assert answer.status_code == 401, answer.text
    assert_error_shape(answer)
    assert get_approval(engine, request_id).status == "pending"
    _no_reply(slack)


async def test_a_replayed_request_is_401(
    slack_settings: Settings, engine: Engine, slack: SlackStub, request_id: str
) -> None:
    body = form(
        block_action("U0NOBODY", "approve", request_id, response_url=slack.response_url("r"))
    )
    headers = sign(SIGNING_SECRET, body)
    async with http_for(create_app(slack_settings)) as http:
        first = await http.post(ROUTE, content=body, headers=headers)
        again = await http.post(ROUTE, content=body, headers=headers)
    # Another API process shares the database, so it refuses the replay too.
    async with http_for(create_app(slack_settings)) as http:
        elsewhere = await http.post(ROUTE, content=body, headers=headers)
    assert first.status_code == 200, first.text
    assert again.status_code == 401 and "replay" in again.text
    assert elsewhere.status_code == 401
    assert len(slack.calls("hook:r")) == 1  # the first one's reply only


async def test_without_a_signing_secret_everything_is_refused(
    slack_settings: Settings, engine: Engine, slack: SlackStub, request_id: str
) -> None:
    unset = slack_settings.model_copy(update={"slack_signing_secret": SecretStr("")})
    async with http_for(create_app(unset)) as http:
        answer = await post_signed(
            http, block_action("U0LEAD", "approve", request_id, response_url="x")
        )
    assert answer.status_code == 503 and "slack_signing_secret" in answer.text
    assert_error_shape(answer)


async def test_a_large_body_is_refused_before_it_is_read(
    slack_settings: Settings, slack: SlackStub
) -> None:
    body = b"payload=" + b"x" * (64 * 1024)
    headers = sign(SIGNING_SECRET, body)
    async with http_for(create_app(slack_settings)) as http:
        answer = await http.post(ROUTE, content=body, headers=headers)
    assert answer.status_code == 413


async def test_an_unknown_slack_user_is_told_and_nothing_is_decided(
    slack_settings: Settings, engine: Engine, slack: SlackStub, request_id: str
) -> None:
    async with http_for(create_app(slack_settings)) as http:
        answer = await post_signed(
            http,
            block_action("U0NOBODY", "approve", request_id, response_url=slack.response_url("u")),
        )
    assert answer.status_code == 200 and answer.content == b""
    reply = _reply(slack, "u")
    assert reply["response_type"] == "ephemeral" and reply["replace_original"] is False
    assert "not a liftloop user" in str(reply["text"])
    assert get_approval(engine, request_id).status == "pending"


@pytest.mark.parametrize(
    ("role", "groups", "rule"),
    [
        ("manager", None, "approver.role"),
        ("auditor", None, "approver.role"),
        ("approver", ["de-approvers"], "approver.group"),
    ],
)
async def test_whom_the_rules_refuse_is_told_the_rule_and_nothing_is_decided(
    slack_settings: Settings,
    engine: Engine,
    slack: SlackStub,
    request_id: str,
    role: str,
    groups: list[str] | None,
    rule: str,
) -> None:
    user_token(engine, "someone", role, groups=groups, slack_id="U0SOMEONE")
    async with http_for(create_app(slack_settings)) as http:
        for action in ("approve", "reject"):
            url = slack.response_url(action)
            answer = await post_signed(
                http, block_action("U0SOMEONE", action, request_id, response_url=url)
            )
            assert answer.status_code == 200
            reply = _reply(slack, action)
            assert reply["response_type"] == "ephemeral" and rule in str(reply["text"])
    assert slack.calls("views.open") == []  # no reason is asked of whom the rules refuse
    assert get_approval(engine, request_id).status == "pending"


async def test_the_starter_of_the_campaign_is_refused_four_eyes(
    slack_settings: Settings, engine: Engine, slack: SlackStub
) -> None:
    rid = add_request(engine, "foureyes", started_by="ada")
    user_token(engine, "ada", "approver", slack_id="U0ADA")
    async with http_for(create_app(slack_settings)) as http:
        await post_signed(
            http, block_action("U0ADA", "approve", rid, response_url=slack.response_url("f"))
        )
    assert "approver.four_eyes" in str(_reply(slack, "f")["text"])
    assert get_approval(engine, rid).status == "pending"


async def test_reject_asks_for_a_reason_and_refuses_none(
    slack_settings: Settings, engine: Engine, slack: SlackStub, request_id: str
) -> None:
    user_token(engine, "lead", "approver", slack_id="U0LEAD")
    url = slack.response_url("rej")
    async with http_for(create_app(slack_settings)) as http:
        click = block_action("U0LEAD", "reject", request_id, response_url=url, trigger_id="trig-9")
        assert (await post_signed(http, click)).status_code == 200
        [opened] = slack.calls("views.open")
        assert opened.body["trigger_id"] == "trig-9"
        view = opened.body["view"]
        assert view["callback_id"] == "reject_reason"
        assert json.loads(view["private_metadata"]) == {
            "request_id": request_id,
            "response_url": url,
        }
        blank = await post_signed(http, view_submission("U0LEAD", view, "   "))
        assert blank.status_code == 200
        assert blank.json()["response_action"] == "errors"
        assert "rejection.reason" in blank.json()["errors"]["reason"]
        stranger = await post_signed(http, view_submission("U0NOBODY", view, "too generous"))
        assert "not a liftloop user" in stranger.json()["errors"]["reason"]
    assert get_approval(engine, request_id).status == "pending"


async def test_other_interactions_are_acknowledged_and_ignored(
    slack_settings: Settings, engine: Engine, slack: SlackStub, request_id: str
) -> None:
    other = block_action("U0LEAD", "something_else", request_id, response_url="x")
    async with http_for(create_app(slack_settings)) as http:
        assert (await post_signed(http, other)).status_code == 200
        shortcut = {"type": "shortcut", "user": {"id": "U0LEAD"}, "callback_id": "x"}
        assert (await post_signed(http, shortcut)).status_code == 200
        body = b"payload=not-json"
        headers = sign(SIGNING_SECRET, body)
        bad = await http.post(ROUTE, content=body, headers=headers)
    assert bad.status_code == 400
    assert get_approval(engine, request_id).status == "pending"
    _no_reply(slack)
