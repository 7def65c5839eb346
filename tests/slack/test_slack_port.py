"""The Slack adapter against the local stand-in, over real HTTP: posts and updates, Slack's
errors classified (retryable or permanent), one wait on a 429's Retry-After, response_urls."""

from __future__ import annotations

import time

import pytest

from connectors.slack import SlackError, SlackWebApi
from tests.slack.slack_stub import SlackStub, channel_id

BLOCKS = [{"type": "section", "text": {"type": "plain_text", "text": "hello"}}]


def test_post_and_update_speak_the_web_api(slack: SlackStub) -> None:
    api = SlackWebApi(slack.token, slack.base_url)
    posted = api.post_message("#approvals", "hello", BLOCKS)
    assert posted.channel_id == channel_id("#approvals") and posted.ts
    api.update_message(posted.channel_id, posted.ts, "bye", BLOCKS)
    assert slack.messages[(posted.channel_id, posted.ts)]["text"] == "bye"
    [post] = slack.calls("chat.postMessage")
    assert post.body["channel"] == "#approvals" and post.body["blocks"] == BLOCKS
    assert post.body["text"] == "hello" and post.body["unfurl_links"] is False
    reply = api.post_message(posted.channel_id, "again", BLOCKS, thread_ts=posted.ts)
    assert slack.messages[(reply.channel_id, reply.ts)]["thread_ts"] == posted.ts


@pytest.mark.parametrize("code", ["channel_not_found", "not_in_channel"])
def test_channel_errors_are_permanent(slack: SlackStub, code: str) -> None:
    (slack.missing_channels if code == "channel_not_found" else slack.not_in_channels).add("#x")
    with pytest.raises(SlackError) as caught:
        SlackWebApi(slack.token, slack.base_url).post_message("#x", "hello", BLOCKS)
    assert caught.value.code == code and not caught.value.retryable
    assert str(caught.value) == f"chat.postMessage: {code}"  # nothing of the message


def test_a_bad_token_is_permanent_and_a_token_problem(slack: SlackStub) -> None:
    with pytest.raises(SlackError) as caught:
        SlackWebApi("xoxb-wrong", slack.base_url).post_message("#approvals", "x", BLOCKS)
    assert caught.value.code == "invalid_auth" and not caught.value.retryable
    assert caught.value.token_problem


def test_a_rate_limit_is_waited_out_once(slack: SlackStub) -> None:
    waits: list[float] = []
    api = SlackWebApi(slack.token, slack.base_url, sleep=waits.append)
    slack.rate_limit("chat.postMessage", times=1, retry_after=2)
    assert api.post_message("#approvals", "x", BLOCKS).ts
    assert waits == [2.0] and len(slack.calls("chat.postMessage")) == 2

    slack.rate_limit("chat.postMessage", times=2, retry_after=1)
    with pytest.raises(SlackError) as caught:
        api.post_message("#approvals", "x", BLOCKS)
    assert caught.value.code == "ratelimited" and caught.value.retryable
    assert caught.value.retry_after == 1.0 and waits == [2.0, 1.0]


def test_a_long_retry_after_is_left_to_the_caller(slack: SlackStub) -> None:
    api = SlackWebApi(slack.token, slack.base_url, max_wait_s=5)
    slack.rate_limit("chat.update", times=1, retry_after=30)
    start = time.monotonic()
    with pytest.raises(SlackError) as caught:
        api.update_message("C1", "1.1", "x", BLOCKS)
    assert caught.value.retryable and caught.value.retry_after == 30.0
    assert time.monotonic() - start < 5 and len(slack.calls("chat.update")) == 1


def test_an_unreachable_slack_is_retryable() -> None:
    with SlackStub() as gone:
        url = gone.base_url
    with pytest.raises(SlackError) as caught:
        SlackWebApi("xoxb-x", url, timeout_s=2).post_message("#approvals", "x", BLOCKS)
    assert caught.value.code == "unreachable" and caught.value.retryable


def test_response_urls_only_go_to_slack(slack: SlackStub) -> None:
    api = SlackWebApi(slack.token, slack.base_url)
    api.respond(slack.response_url("r1"), "decided", BLOCKS, replace_original=True)
    api.respond(slack.response_url("r2"), "only you see this", ephemeral=True)
    first, second = slack.calls("hook:r1")[0].body, slack.calls("hook:r2")[0].body
    assert first == {"text": "decided", "replace_original": True, "blocks": BLOCKS}
    assert second["response_type"] == "ephemeral" and second["replace_original"] is False
    for url in ("https://attacker.example/hooks/x", "http://hooks.slack.com/actions/x"):
        with pytest.raises(SlackError) as caught:
            api.respond(url, "x")
        assert caught.value.code == "not_a_slack_url"


def test_views_open(slack: SlackStub) -> None:
    api = SlackWebApi(slack.token, slack.base_url)
    api.open_view("trigger-1", {"type": "modal", "callback_id": "x"})
    assert slack.calls("views.open")[0].body["trigger_id"] == "trigger-1"
    with pytest.raises(SlackError) as caught:
        api.open_view("", {"type": "modal"})
    assert caught.value.code == "invalid_trigger_id"
