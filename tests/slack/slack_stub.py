"""A local stand-in of Slack for tests and benchmarks: the Web API methods liftloop calls, the
`response_url` of interactions, and signed interaction requests built as Slack builds them.

`SlackStub` listens on 127.0.0.1 (a free port) in a background thread and speaks Slack's
documented protocol over real HTTP, so slack_sdk's own clients talk to it:
- `POST /api/chat.postMessage`, `/api/chat.update`, `/api/views.open` with a bearer token,
  answering `{"ok": true, ...}` as Slack does, or HTTP 200 with `{"ok": false, "error": ...}`
  (`invalid_auth`, `channel_not_found`, `not_in_channel`, `message_not_found`), or HTTP 429 with
  `Retry-After` and `{"ok": false, "error": "ratelimited"}`;
- `POST /hooks/<name>`: a response_url (`stub.response_url("x")`), answering `ok`.

    with SlackStub() as stub:
        settings = Settings(slack_bot_token=stub.token, slack_base_url=stub.base_url, ...)
        stub.missing_channels.add("#gone")        # channel_not_found
        stub.rate_limit("chat.postMessage", times=1, retry_after=1)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlencode


@dataclass(frozen=True)
class Call:
    """One request as it arrived: the method (`chat.update`, or `hook:<name>`) and its body."""

    method: str
    body: dict[str, Any]
    at: float


def channel_id(channel: str) -> str:
    """The id the stub gives a channel name (an id stays itself)."""
    if not channel.startswith("#"):
        return channel
    return "C" + hashlib.sha256(channel.encode()).hexdigest()[:10].upper()


class SlackStub:
    def __init__(self, token: str = "xoxb-test-token") -> None:
        self.token = token
        self.missing_channels: set[str] = set()
        self.not_in_channels: set[str] = set()
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._limits: dict[str, list[float]] = defaultdict(list)
        self._seq = 0
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/"

    def response_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/{name}"

    def rate_limit(self, method: str, times: int = 1, retry_after: float = 1) -> None:
        """The next `times` calls of `method` are answered 429 with this Retry-After."""
        with self._lock:
            self._limits[method].extend([retry_after] * times)

    def calls(self, method: str | None = None) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if method is None or c.method == method]

    def wait_for(self, method: str, count: int = 1, seconds: float = 30.0) -> list[Call]:
        """The calls of `method` once there are `count` of them (AssertionError on timeout)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            found = self.calls(method)
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(f"{method}: {len(self.calls(method))} calls, expected {count}")

    def __enter__(self) -> SlackStub:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- the protocol -----------------------------------------------------------------------

    def _answer(self, method: str, body: dict[str, Any], auth: str) -> tuple[int, Any, float]:
        """(status, JSON body, retry_after) for one Web API call."""
        with self._lock:
            self._calls.append(Call(method, body, time.time()))
            if self._limits[method]:
                return 429, {"ok": False, "error": "ratelimited"}, self._limits[method].pop(0)
            if auth != f"Bearer {self.token}":
                return 200, {"ok": False, "error": "invalid_auth"}, 0
            if method == "chat.postMessage":
                return self._post(body)
            if method == "chat.update":
                key = (str(body.get("channel")), str(body.get("ts")))
                if key not in self.messages:
                    return 200, {"ok": False, "error": "message_not_found"}, 0
                self.messages[key] = {**self.messages[key], **_content(body)}
                return 200, {"ok": True, "channel": key[0], "ts": key[1], **_content(body)}, 0
            if method == "views.open":
                if not body.get("trigger_id"):
                    return 200, {"ok": False, "error": "invalid_trigger_id"}, 0
                return 200, {"ok": True, "view": {"id": "V0STUB", **body.get("view", {})}}, 0
            return 200, {"ok": False, "error": "unknown_method"}, 0

    def _post(self, body: dict[str, Any]) -> tuple[int, Any, float]:
        channel = str(body.get("channel", ""))
        if not channel or channel in self.missing_channels:
            return 200, {"ok": False, "error": "channel_not_found"}, 0
        if channel in self.not_in_channels:
            return 200, {"ok": False, "error": "not_in_channel"}, 0
        self._seq += 1
        cid, ts = channel_id(channel), f"{int(time.time())}.{self._seq:06d}"
        self.messages[(cid, ts)] = {**_content(body), "thread_ts": body.get("thread_ts")}
        return 200, {"ok": True, "channel": cid, "ts": ts, "message": _content(body)}, 0

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(size)
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    body = {}
                if self.path.startswith("/hooks/"):
                    with stub._lock:
                        stub._calls.append(Call(f"hook:{self.path[7:]}", body, time.time()))
                    self._send(200, b"ok", "text/plain")
                    return
                if not self.path.startswith("/api/"):
                    self._send(404, b"not found", "text/plain")
                    return
                status, answer, retry_after = stub._answer(
                    self.path[5:], body, self.headers.get("Authorization", "")
                )
                headers = {"Retry-After": str(int(retry_after))} if status == 429 else {}
                self._send(status, json.dumps(answer).encode(), "application/json", headers)

            def _send(
                self,
                status: int,
                data: bytes,
                kind: str,
                headers: dict[str, str] | None = None,
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler


def _content(body: dict[str, Any]) -> dict[str, Any]:
    return {"text": body.get("text"), "blocks": body.get("blocks")}


# -- signed interactions, as Slack sends them --------------------------------------------------


def sign(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """Slack's signing: `v0=` + HMAC-SHA256 of `v0:{timestamp}:{body}` under the secret."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    base = b"v0:" + ts.encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


def form(payload: dict[str, Any]) -> bytes:
    """The body Slack posts: `payload=<json>`, form-encoded."""
    return urlencode({"payload": json.dumps(payload)}).encode()


def block_action(
    user: str,
    action: str,
    request_id: str,
    *,
    response_url: str,
    channel: str = "C0APPROVALS",
    message_ts: str = "1700000000.000100",
    trigger_id: str = "13345224609.738474920.8088930838d88f008e0",
) -> dict[str, Any]:
    """A `block_actions` payload of a button click, with the fields Slack documents."""
    return {
        "type": "block_actions",
        "team": {"id": "T0TEAM", "domain": "example"},
        "user": {"id": user, "username": "someone", "team_id": "T0TEAM"},
        "api_app_id": "A0APP",
        "token": "deprecated-verification-token",
        "trigger_id": trigger_id,
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel,
            "is_ephemeral": False,
        },
        "channel": {"id": channel, "name": "approvals"},
        "message": {"type": "message", "ts": message_ts, "text": "approval"},
        "response_url": response_url,
        "actions": [
            {
                "type": "button",
                "action_id": action,
                "block_id": "approval",
                "value": request_id,
                "action_ts": f"{time.time():.6f}",
                "text": {"type": "plain_text", "text": action.title()},
            }
        ],
    }


def view_submission(user: str, view: dict[str, Any], reason: str) -> dict[str, Any]:
    """The `view_submission` payload of a modal `view` (as views.open got it), `reason` typed
    into its one input block."""
    inputs = [b for b in view.get("blocks", []) if b.get("type") == "input"]
    assert len(inputs) == 1, inputs
    block, element = inputs[0]["block_id"], inputs[0]["element"]
    typed = {element["action_id"]: {"type": element["type"], "value": reason}}
    return {
        "type": "view_submission",
        "team": {"id": "T0TEAM", "domain": "example"},
        "user": {"id": user, "username": "someone", "team_id": "T0TEAM"},
        "api_app_id": "A0APP",
        "trigger_id": "13345224609.738474920.8088930838d88f008e1",
        "view": {
            **view,
            "id": "V0STUB",
            "state": {"values": {block: typed}},
        },
    }
