"""Slack's Web API: post a message, update it, answer an interaction through its
`response_url`, open a modal. Its users (approvals/) declare the narrow interface they need.

Errors are classified, so the caller knows whether trying again can help: `ratelimited` (HTTP
429, with the Retry-After Slack sends), Slack's 5xx and an unreachable Slack are retryable;
`channel_not_found`, `not_in_channel`, `invalid_auth`, `token_revoked` and every other error
Slack names are permanent. A rate limit is honoured once here when Slack asks for a short wait;
beyond that the retry is the caller's, so no call blocks for long.

A `SlackError` carries the method and Slack's error code only: `SlackApiError`'s own message
repeats the response, and what Slack echoes back (a message's text) has no place in a log."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.webhook import WebhookClient

# Error codes Slack documents as temporary; any other code it names is permanent.
RETRYABLE_CODES = frozenset(
    {"ratelimited", "rate_limited", "service_unavailable", "internal_error", "fatal_error"}
)
# Codes after which no other call with the same token can succeed either.
TOKEN_CODES = frozenset(
    {"invalid_auth", "token_revoked", "token_expired", "account_inactive", "not_authed"}
)
# Where Slack's interactions point their response_url.
SLACK_RESPONSE_HOSTS = ("hooks.slack.com",)


class SlackError(RuntimeError):
    """A refused or failed Slack call: `code` is Slack's error (`channel_not_found`), or
    `http_<status>`, or `unreachable`; `retry_after` is what a 429 asked for, in seconds."""

    def __init__(
        self, method: str, code: str, *, retryable: bool, retry_after: float | None = None
    ) -> None:
        self.method, self.code = method, code
        self.retryable, self.retry_after = retryable, retry_after
        super().__init__(f"{method}: {code}")

    @property
    def token_problem(self) -> bool:
        return self.code in TOKEN_CODES


@dataclass(frozen=True)
class PostedMessage:
    channel_id: str
    ts: str


def _retry_after(headers: Mapping[str, Any] | None) -> float | None:
    for name, value in (headers or {}).items():
        if name.lower() == "retry-after":
            raw = value[0] if isinstance(value, list) and value else value
            try:
                return max(0.0, float(str(raw)))
            except ValueError:
                return None
    return None


def classify(method: str, status: int, data: Any, headers: Mapping[str, Any] | None) -> SlackError:
    """The SlackError of an answer that was not `{"ok": true}`."""
    code = data.get("error") if isinstance(data, Mapping) else None
    if status == 429:
        return SlackError(
            method, str(code or "ratelimited"), retryable=True, retry_after=_retry_after(headers)
        )
    if not isinstance(code, str) or not code:
        return SlackError(method, f"http_{status}", retryable=status >= 500)
    return SlackError(method, code, retryable=code in RETRYABLE_CODES or status >= 500)


def _api_error(method: str, exc: SlackApiError) -> SlackError:
    response = exc.response
    return classify(
        method,
        int(getattr(response, "status_code", 0) or 0),
        getattr(response, "data", None),
        getattr(response, "headers", None),
    )


class SlackWebApi:
    """The adapter over slack_sdk's synchronous clients (activities run in threads; the API calls
    it through `asyncio.to_thread`). `max_wait_s` bounds the one wait a 429 gets here."""

    def __init__(
        self,
        token: str,
        base_url: str = "https://slack.com/api/",
        *,
        timeout_s: float = 10.0,
        max_wait_s: float = 5.0,
        response_hosts: Sequence[str] = SLACK_RESPONSE_HOSTS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._base_url = base_url if base_url.endswith("/") else base_url + "/"
        # No retry handlers: slack_sdk would otherwise retry on its own; here one place decides.
        self._client = WebClient(
            token=token, base_url=self._base_url, timeout=int(timeout_s), retry_handlers=[]
        )
        self._timeout_s, self._max_wait_s, self._sleep = timeout_s, max_wait_s, sleep
        # A response_url comes in a signed request, but only Slack's hosts (and the Web API's
        # own host, which is a local stand-in in tests) are ever sent a message.
        base = urlsplit(self._base_url)
        self._response_origins = {("https", host) for host in response_hosts} | {
            (base.scheme, base.netloc)
        }

    def _call(self, method: str, call: Callable[[], Any]) -> Any:
        for attempt in (1, 2):
            try:
                return call()
            except SlackError as exc:  # classified already (a response_url's answer)
                error = exc
            except SlackApiError as exc:
                error = _api_error(method, exc)
            except OSError:  # refused, reset, timed out: Slack (or the way to it) is down
                error = SlackError(method, "unreachable", retryable=True)
            except SlackClientError as exc:
                error = SlackError(method, type(exc).__name__, retryable=False)
            wait = error.retry_after
            if attempt == 1 and wait is not None and wait <= self._max_wait_s:
                self._sleep(wait)
                continue
            raise error
        raise AssertionError("unreachable")  # pragma: no cover

    def post_message(
        self,
        channel: str,
        text: str,
        blocks: Sequence[Mapping[str, Any]],
        *,
        thread_ts: str | None = None,
        reply_broadcast: bool = False,
    ) -> PostedMessage:
        extra: dict[str, Any] = {}
        if thread_ts is not None:
            extra = {"thread_ts": thread_ts, "reply_broadcast": reply_broadcast}
        response = self._call(
            "chat.postMessage",
            lambda: self._client.chat_postMessage(
                channel=channel,
                text=text,
                blocks=[dict(b) for b in blocks],
                unfurl_links=False,
                unfurl_media=False,
                **extra,
            ),
        )
        channel_id, ts = response.get("channel"), response.get("ts")
        if not isinstance(channel_id, str) or not isinstance(ts, str):
            raise SlackError("chat.postMessage", "bad_response", retryable=False)
        return PostedMessage(channel_id=channel_id, ts=ts)

    def update_message(
        self, channel_id: str, ts: str, text: str, blocks: Sequence[Mapping[str, Any]]
    ) -> None:
        self._call(
            "chat.update",
            lambda: self._client.chat_update(
                channel=channel_id, ts=ts, text=text, blocks=[dict(b) for b in blocks]
            ),
        )

    def open_view(self, trigger_id: str, view: Mapping[str, Any]) -> None:
        self._call(
            "views.open", lambda: self._client.views_open(trigger_id=trigger_id, view=dict(view))
        )

    def respond(
        self,
        response_url: str,
        text: str,
        blocks: Sequence[Mapping[str, Any]] | None = None,
        *,
        replace_original: bool = False,
        ephemeral: bool = False,
    ) -> None:
        parts = urlsplit(response_url)
        if (parts.scheme, parts.netloc) not in self._response_origins:
            raise SlackError("response_url", "not_a_slack_url", retryable=False)
        body: dict[str, Any] = {"text": text, "replace_original": replace_original}
        if blocks is not None:
            body["blocks"] = list(blocks)
        if ephemeral:
            body["response_type"] = "ephemeral"
        hook = WebhookClient(response_url, timeout=int(self._timeout_s), retry_handlers=[])

        def send() -> None:
            answer = hook.send_dict(body)
            if answer.status_code != 200:
                # A response_url answers with plain text: "expired_url", "invalid_blocks", …
                code = answer.body.strip() if answer.body.strip().isidentifier() else None
                raise classify("response_url", answer.status_code, {"error": code}, answer.headers)

        self._call("response_url", send)
