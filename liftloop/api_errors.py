"""One error shape for the whole HTTP API: `{"errors": [{"field": ..., "reason": ...}]}`.

Every refusal answers it — bad JSON, a body too large, a missing key, an invalid spec, an unknown
id, a conflict, FastAPI's own validation and HTTP errors, routing errors — and so does an
exception nobody expected: that one is a bug, answered 500 with a reference that is also logged
(exception type and stack only, never request data), and the connection stays usable.

Three layers make sure of it:
- `ShapedRoute`, the route class of every router: errors raised in a route (dependencies
  included) become the shape wherever the router is mounted;
- exception handlers on the app for what Starlette raises outside routes (404, 405);
- `ShieldMiddleware` around everything: a global cap on request bodies, and the last word on an
  exception that escapes the rest, so the server never sees one (uvicorn would drop the
  connection after its plain-text 500).
"""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.client import RPCTimeoutOrCancelledError
from temporalio.service import RPCError, RPCStatusCode

from liftloop.loop.spec import SpecError
from tools.cdp.errors import CdpError

log = logging.getLogger("liftloop.api")

_MAX_TEXT = 500
_LOCATIONS = ("body", "query", "path", "header", "cookie")


class Problem(BaseModel):
    field: str
    reason: str


class ErrorBody(BaseModel):
    """What every refusal of the API answers."""

    errors: list[Problem]


# For the OpenAPI document: every route may answer these with the error shape.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in (
        (400, "unreadable request (bad JSON, bad encoding, a bad message)"),
        (401, "missing or unknown key"),
        (404, "unknown id or path"),
        (409, "conflict with the current state"),
        (413, "body too large"),
        (422, "invalid input"),
        (503, "Temporal is unreachable"),
    )
}


class ApiError(Exception):
    """A refusal with its HTTP status and one or more (field, reason) problems."""

    def __init__(
        self,
        status: int,
        field: str,
        reason: str,
        *,
        more: Iterable[tuple[str, str]] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.problems = [(field, reason), *more]
        self.headers = headers
        super().__init__("; ".join(f"{f}: {r}" for f, r in self.problems))


def _text(value: object) -> str:
    """Text safe to encode (no lone surrogate survives; a NUL is escaped) and short."""
    text = str(value).encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def error_response(
    status: int, problems: Sequence[tuple[str, str]], headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"errors": [{"field": _text(f) or "request", "reason": _text(r)} for f, r in problems]}
    return JSONResponse(status_code=status, content=body, headers=headers)


def _validation_problems(errors: Sequence[Any]) -> list[tuple[str, str]]:
    """pydantic's or FastAPI's errors as (field, reason), without echoing the input."""
    problems = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        if len(loc) > 1 and loc[0] in _LOCATIONS:
            loc = loc[1:]
        reason = str(err.get("msg", "is invalid")).removeprefix("Value error, ")
        problems.append((".".join(loc) or "body", reason))
    return problems or [("body", "is invalid")]


def _http_field(status: int) -> str:
    return {404: "path", 405: "method", 413: "body", 401: "authorization"}.get(status, "request")


def _rpc_error(exc: RPCError) -> ApiError:
    status = exc.status
    if status == RPCStatusCode.NOT_FOUND:
        return ApiError(404, "campaign_id", exc.message or "not found")
    if status in (RPCStatusCode.ALREADY_EXISTS, RPCStatusCode.FAILED_PRECONDITION):
        return ApiError(409, "campaign_id", exc.message or "conflicts with its state")
    if status == RPCStatusCode.INVALID_ARGUMENT:
        return ApiError(422, "request", f"refused by Temporal: {exc.message}")
    return ApiError(503, "temporal", f"unavailable ({status.name.lower()})")


def log_unexpected(exc: BaseException, scope: Scope) -> str:
    """Log an unexpected exception and return its reference. Only the type and the stack are
    logged (file, line, function, code): messages and request data may carry personal data."""
    ref = uuid.uuid4().hex[:12]
    route = scope.get("route")
    where = getattr(route, "path", None) or "(no route)"
    stack = "".join(traceback.format_list(traceback.extract_tb(exc.__traceback__)))
    log.error(
        "unexpected %s in %s %s (reference %s)\n%s",
        type(exc).__qualname__,
        scope.get("method", "?"),
        where,
        ref,
        stack,
    )
    return ref


def response_for(exc: BaseException, scope: Scope) -> Response:
    """The error-shape response for any exception raised while serving a request."""
    if isinstance(exc, RPCError):
        exc = _rpc_error(exc)
    elif isinstance(exc, RPCTimeoutOrCancelledError):
        exc = ApiError(503, "temporal", "did not answer in time")
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.problems, exc.headers)
    if isinstance(exc, SpecError):
        return error_response(422, exc.problems)
    if isinstance(exc, CdpError):
        return error_response(400, [(exc.field, exc.reason)])
    if isinstance(exc, RequestValidationError):
        return error_response(422, _validation_problems(exc.errors()))
    if isinstance(exc, ValidationError):
        return error_response(422, _validation_problems(exc.errors(include_url=False)))
    if isinstance(exc, StarletteHTTPException):
        reason = exc.detail if isinstance(exc.detail, str) else "refused"
        return error_response(exc.status_code, [(_http_field(exc.status_code), reason.lower())])
    ref = log_unexpected(exc, scope)
    return error_response(500, [("server", f"unexpected error (reference {ref})")])


class ShapedRoute(APIRoute):
    """An APIRoute whose every error, its dependencies' included, answers the error shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def shaped(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                return response_for(exc, request.scope)

        return shaped


class BodyTooLarge(ApiError):
    def __init__(self, limit: int, size: int | None = None) -> None:
        if size is None:
            reason = f"is larger than the limit of {limit} bytes"
        else:
            reason = f"is {size} bytes; at most {limit} bytes are allowed"
        super().__init__(413, "body", reason)


class ShieldMiddleware:
    """The outermost guard: refuses bodies above `max_body_bytes` (by Content-Length before
    reading, and by counting what streams in), and turns any exception that escapes the app into
    the error shape instead of letting the server reset the connection."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app, self.max_body_bytes = app, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        limit = self.max_body_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await error_response(413, BodyTooLarge(limit, declared).problems)(scope, receive, send)
            return
        seen = 0

        async def capped_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, capped_receive, watched_send)
        except Exception as exc:
            if started:  # nothing more can be said on this response
                log_unexpected(exc, scope)
                return
            await response_for(exc, scope)(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def install_error_handling(app: FastAPI, max_body_bytes: int) -> None:
    """Give `app` the error shape everywhere (call before adding routes)."""
    app.router.route_class = ShapedRoute

    async def handle(request: Request, exc: Exception) -> Response:
        return response_for(exc, request.scope)

    app.add_exception_handler(StarletteHTTPException, handle)
    app.add_exception_handler(RequestValidationError, handle)
    app.add_exception_handler(ApiError, handle)
    app.add_middleware(ShieldMiddleware, max_body_bytes=max_body_bytes)
