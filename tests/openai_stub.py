"""A local server that speaks OpenAI's chat-completions protocol, for tests and benchmarks.

`OpenAIStub` listens on 127.0.0.1 (a free port) in a background thread, so the real `openai`
client and pydantic-ai's `OpenAIChatModel` talk to it over real sockets: request encoding,
authentication, HTTP errors, tool calls and usage accounting all go the way they go against a
hosted model. By default it answers a request that offers the copywriter's output tool with the
draft the offline model would compose from the same prompt, so tests can compare the two paths.

    with OpenAIStub() as stub:
        client = AsyncOpenAI(base_url=stub.base_url, api_key=stub.api_key, max_retries=0)
        stub.fail_next(429, retry_after=2)   # the next request is rate limited
        stub.tamper(lambda draft: {**draft, "subject": "50 % off"})  # the next draft is wrong
        stub.respond(lambda body: {"role": "assistant", "content": "hi"})  # another agent

Only the non-streaming `POST /v1/chat/completions` is served; `stream: true` is refused with a
400, as an unsupported value.
"""

from __future__ import annotations

import contextlib
import json
import math
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast

# The offline model's composer is reused on purpose: over HTTP the copywriter must write exactly
# what it writes in-process, so a difference between the two paths is a transport bug.
from tools.content.offline_model import (
    KNOWLEDGE_MARK,
    PARAMETERS_MARK,
    REVISION_MARK,
    _Composer,
    _json_after,
)

Message = dict[str, Any]
Responder = Callable[[dict[str, Any]], Message]
Tamper = Callable[[dict[str, Any]], dict[str, Any]]

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
_NO_PARAMETERS = "I need the parameters and knowledge JSON to write."


@dataclass(frozen=True)
class RecordedRequest:
    """One request as it arrived: header names lower-cased, the body parsed and as sent."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any  # the parsed JSON; None when the body was empty or not JSON
    raw: str


@dataclass(frozen=True)
class _Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class _ApiError(Exception):
    """An answer in the API's documented error shape: {"error": {message, type, param, code}}."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.reply = _Reply(
            status,
            {"error": {"message": message, "type": type, "param": param, "code": code}},
            headers or {},
        )


@dataclass(frozen=True)
class _Failure:
    status: int
    retry_after: float | None
    message: str | None

    def error(self) -> _ApiError:
        headers = {} if self.retry_after is None else {"retry-after": f"{self.retry_after:g}"}
        if self.status == 429:
            message = self.message or (
                "Rate limit reached for requests per min (RPM). Please try again later."
            )
            return _ApiError(
                429, message, type="requests", code="rate_limit_exceeded", headers=headers
            )
        if self.status >= 500:
            message = self.message or (
                "The server had an error while processing your request. Sorry about that!"
                if self.status == 500
                else "The engine is currently overloaded, please try again later."
            )
            return _ApiError(self.status, message, type="server_error", headers=headers)
        return _ApiError(self.status, self.message or "Scripted failure.", headers=headers)


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _message_text(message: Message) -> str:
    calls = message.get("tool_calls") or []
    arguments = "".join(str(c.get("function", {}).get("arguments", "")) for c in calls)
    return _text(message.get("content")) + arguments


def _tokens(text: str) -> int:
    # A fixed ratio rather than a tokenizer: deterministic, and close to English text's average.
    return math.ceil(len(text) / 4)


def _output_tool(body: dict[str, Any]) -> str | None:
    """The tool that carries a CopyDraft: named by tool_choice, shaped like one, or the only one."""
    tools = [t["function"] for t in body.get("tools") or [] if t.get("type") == "function"]
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return str(choice["function"]["name"])
    for tool in tools:
        properties = (tool.get("parameters") or {}).get("properties") or {}
        if {"subject", "body_blocks"} <= properties.keys():
            return str(tool["name"])
    if len(tools) == 1 or (tools and choice == "required"):
        return str(tools[0]["name"])
    return None


def _validate(body: Any) -> dict[str, Any]:
    """The checks the real endpoint makes that a client's mistakes would run into."""
    if not isinstance(body, dict):
        raise _ApiError(
            400,
            "We could not parse the JSON body of your request. The body must be a JSON object.",
        )
    for name in ("model", "messages"):
        if name not in body:
            raise _ApiError(
                400,
                f"Missing required parameter: '{name}'.",
                param=name,
                code="missing_required_parameter",
            )
    if not isinstance(body["model"], str) or not body["model"]:
        raise _ApiError(400, "Invalid 'model': expected a non-empty string.", param="model")
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise _ApiError(
            400,
            "Invalid 'messages': expected a non-empty array.",
            param="messages",
            code="empty_array",
        )
    call_ids: set[str] = set()
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in _ROLES:
            raise _ApiError(
                400,
                f"Invalid value: {role!r}. Supported values are: {', '.join(sorted(_ROLES))}.",
                param=f"messages[{i}].role",
                code="invalid_value",
            )
        call_ids.update(c.get("id", "") for c in message.get("tool_calls") or [])
        # A tool result must answer a call an earlier assistant message made: a client that
        # loses or reorders its history fails here, as it would against the hosted API.
        if role == "tool" and message.get("tool_call_id") not in call_ids:
            raise _ApiError(
                400,
                "Invalid parameter: messages with role 'tool' must be a response to a preceding"
                " message with 'tool_calls'.",
                param=f"messages.[{i}].role",
            )
    if body.get("stream"):
        raise _ApiError(
            400,
            "stream=true is not supported by this stub.",
            param="stream",
            code="unsupported_value",
        )
    return body


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a kept-alive connection must not hold the process open

    def __init__(self, stub: OpenAIStub) -> None:
        self.stub = stub
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps the client's connection open between requests, as a hosted API does.
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm the second waits for the
    # client's delayed ACK (about 40 ms on Linux), which would swamp every figure measured here.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        server = cast(_Server, self.server)
        with server.connections_lock:
            server.connections.add(self.connection)

    def finish(self) -> None:
        server = cast(_Server, self.server)
        with server.connections_lock:
            server.connections.discard(self.connection)
        super().finish()

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply = cast(_Server, self.server).stub._handle(self.command, self.path, headers, raw)
        data = json.dumps(reply.body).encode()
        try:
            self.send_response(reply.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.send_header("x-request-id", f"req_{secrets.token_hex(12)}")
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up first (its timeout): there is nobody left to answer.
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the recorded requests are the log."""


class OpenAIStub:
    """A chat-completions endpoint on 127.0.0.1; see the module docstring."""

    def __init__(self, *, api_key: str | None = None, delay_s: float = 0.0) -> None:
        self.api_key = api_key or f"sk-stub-{secrets.token_hex(16)}"
        self.delay_s = delay_s
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._failures: deque[_Failure] = deque()
        self._tampers: deque[Tamper] = deque()
        self._responder: Responder | None = None
        self._completions = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> OpenAIStub:
        if self._server is not None:
            raise RuntimeError("the stub is already running")
        self._server = _Server(self)
        # A short poll interval lets stop() return promptly.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        # Kept-alive connections would otherwise wait in their handler threads for a next
        # request that never comes.
        with server.connections_lock:
            open_connections = list(server.connections)
        for connection in open_connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)
        server.server_close()
        thread.join()
        self._server = self._thread = None

    def __enter__(self) -> OpenAIStub:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the stub is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- what was asked ----------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in order, failed ones included."""
        with self._lock:
            return list(self._requests)

    # -- scripting ---------------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        *,
        times: int = 1,
        retry_after: float | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next `times` authorised requests with `status` and the API's error body:
        429 as `rate_limit_exceeded` (with a Retry-After header when given), 5xx as
        `server_error`, anything else as `invalid_request_error`."""
        if status < 400:
            raise ValueError(f"not an error status: {status}")
        with self._lock:
            self._failures.extend([_Failure(status, retry_after, message)] * times)

    def tamper(self, fn: Tamper, times: int = 1) -> None:
        """Pass the next `times` composed drafts (the tool call's arguments) through `fn`."""
        with self._lock:
            self._tampers.extend([fn] * times)

    def respond(self, fn: Responder | None) -> None:
        """Answer every chat completion with `fn(body)`, an assistant message dict (`content`,
        `tool_calls` with or without `id`/`type`; dict arguments are encoded); None restores
        the composer."""
        with self._lock:
            self._responder = fn

    # -- serving -----------------------------------------------------------------------------

    def _handle(self, method: str, path: str, headers: dict[str, str], raw: str) -> _Reply:
        try:
            body: Any = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = None
        with self._lock:
            self._requests.append(RecordedRequest(method, path, headers, body, raw))
        if self.delay_s:
            time.sleep(self.delay_s)
        try:
            self._authorize(headers.get("authorization", ""))
            with self._lock:
                failure = self._failures.popleft() if self._failures else None
            if failure is not None:
                raise failure.error()
            route = path.split("?", 1)[0]
            if (method, route) != ("POST", "/v1/chat/completions"):
                raise _ApiError(404, f"Invalid URL ({method} {route})")
            return _Reply(200, self._complete(_validate(body)))
        except _ApiError as error:
            return error.reply

    def _authorize(self, authorization: str) -> None:
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() == "bearer" and secrets.compare_digest(key, self.api_key):
            return
        if not key:
            message = (
                "You didn't provide an API key. You need to provide your API key in an"
                " Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
        else:
            # Like the real API, never echo a whole key back.
            message = f"Incorrect API key provided: {key[:3]}***{key[-4:]}."
        raise _ApiError(401, message, code="invalid_api_key")

    def _complete(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            responder = self._responder
        try:
            message = _normalise(responder(body) if responder else self._compose(body))
        except Exception as exc:  # a broken scripted responder shows up as the API's 500
            raise _ApiError(500, f"stub responder failed: {exc!r}", type="server_error") from exc
        prompt = _tokens("".join(_message_text(m) for m in body["messages"]))
        completion = _tokens(_message_text(message))
        with self._lock:
            self.prompt_tokens += prompt
            self.completion_tokens += completion
            self._completions += 1
            number = self._completions
        return {
            "id": f"chatcmpl-stub{number:06d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if message.get("tool_calls") else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0},
            },
            "system_fingerprint": "fp_openai_stub",
        }

    def _compose(self, body: dict[str, Any]) -> Message:
        """What the offline model would write for the user messages of this request."""
        tool = _output_tool(body)
        prompts = [_text(m.get("content")) for m in body["messages"] if m.get("role") == "user"]
        first = next((p for p in prompts if PARAMETERS_MARK in p), None)
        if tool is None or first is None:
            return {"role": "assistant", "content": _NO_PARAMETERS}
        revisions = [p for p in prompts if p.startswith(REVISION_MARK)]
        draft: dict[str, Any] = _Composer(
            params=_json_after(first, PARAMETERS_MARK) or {},
            items=_json_after(first, KNOWLEDGE_MARK) or [],
            attempt=len(revisions),
            shorten=any("length." in r for r in revisions),
        ).compose()
        with self._lock:
            tamper = self._tampers.popleft() if self._tampers else None
        if tamper is not None:
            draft = tamper(draft)
        arguments = json.dumps(draft, ensure_ascii=False)
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"function": {"name": tool, "arguments": arguments}}],
        }


def _normalise(message: Message) -> Message:
    """An assistant message as the API sends it: every key present, tool calls complete."""
    calls = []
    for call in message.get("tool_calls") or []:
        function = dict(call["function"])
        if not isinstance(function.get("arguments"), str):
            function["arguments"] = json.dumps(function.get("arguments") or {})
        calls.append(
            {
                "id": call.get("id") or f"call_{secrets.token_hex(12)}",
                "type": call.get("type", "function"),
                "function": function,
            }
        )
    normalised: Message = {
        "role": "assistant",
        "content": message.get("content"),
        "refusal": None,
    }
    if calls:
        normalised["tool_calls"] = calls
    return normalised
