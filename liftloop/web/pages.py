"""Rendering pages, and the one place where anything a page route raises becomes a page.

Every route of the web router uses `PageRoute`: a refusal (`PageError`, a refused decision, an
unknown id, Temporal unreachable) is an HTML page with its status, a missing session a redirect
to the sign-in page, and an exception nobody expected a 500 page with a reference that is also
logged (type and stack only, as the API logs it). No web route answers the API's JSON shape.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Coroutine
from importlib import resources
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.client import RPCTimeoutOrCancelledError
from temporalio.service import RPCError, RPCStatusCode

from approvals.rules import DecisionRefused
from liftloop.api_errors import ApiError, log_unexpected
from liftloop.web import formatting

SESSION_STATE = "liftloop_web_session"

# No script, no frames, no third-party anything: the pages need their own stylesheet and
# forms that post back to this origin. Inline SVG is markup, so the charts need nothing more.
_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}

_ENV = Environment(
    loader=PackageLoader("liftloop.web", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters.update(
    when=formatting.when,
    until=formatting.until,
    slots=formatting.with_slots,
    signed=formatting.signed,
    pct=formatting.pct,
)
CSS = resources.files("liftloop.web").joinpath("static/web.css").read_bytes()
# The stylesheet's address changes with its content, so browsers may keep it for long.
CSS_URL = f"/assets/web.css?v={hashlib.sha256(CSS).hexdigest()[:10]}"


class PageError(Exception):
    """A refusal shown as a page: its status, a short title and the reason (and the rule a
    refused decision rests on)."""

    def __init__(self, status: int, title: str, reason: str, *, rule: str | None = None) -> None:
        self.status, self.title, self.reason, self.rule = status, title, reason, rule
        super().__init__(f"{status} {title}: {reason}")


class LoginRequired(Exception):
    """No live session: a page asks the browser to sign in first and come back."""

    def __init__(self, back_to: str) -> None:
        self.back_to = back_to
        super().__init__(back_to)


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    session = getattr(request.state, SESSION_STATE, None)
    html = _ENV.get_template(template).render(
        session=session,
        user=session.user if session is not None else None,
        css_url=CSS_URL,
        path=request.url.path,
        **context,
    )
    return HTMLResponse(html, status_code=status_code)


def error_page(
    request: Request, status: int, title: str, reason: str, rule: str | None = None
) -> HTMLResponse:
    return render(request, "error.html", status, title=title, reason=reason, rule=rule)


def redirect(url: str) -> RedirectResponse:
    """303: after a POST the browser GETs the result, so a reload never posts again."""
    return RedirectResponse(url, status_code=303)


def _page_for(exc: BaseException, request: Request) -> Response:
    if isinstance(exc, LoginRequired):
        if request.method == "GET":
            return redirect(f"/login?next={quote(exc.back_to, safe='/')}")
        return error_page(request, 403, "Not signed in", "your session has ended; sign in again")
    if isinstance(exc, PageError):
        return error_page(request, exc.status, exc.title, exc.reason, exc.rule)
    if isinstance(exc, DecisionRefused):
        return error_page(request, 403, "Decision refused", exc.reason, exc.rule)
    if isinstance(exc, ApiError):
        field, reason = exc.problems[0]
        return error_page(request, exc.status, field, reason)
    if isinstance(exc, RPCError):
        if exc.status == RPCStatusCode.NOT_FOUND:
            return error_page(request, 404, "Not found", exc.message or "not found")
        return error_page(request, 503, "Temporal unavailable", exc.status.name.lower())
    if isinstance(exc, RPCTimeoutOrCancelledError):
        return error_page(request, 503, "Temporal unavailable", "it did not answer in time")
    if isinstance(exc, RequestValidationError):
        return error_page(request, 422, "Invalid request", "the request could not be read")
    if isinstance(exc, StarletteHTTPException):
        reason = exc.detail if isinstance(exc.detail, str) else "refused"
        return error_page(request, exc.status_code, "Refused", reason)
    ref = log_unexpected(exc, request.scope)
    return error_page(request, 500, "Unexpected error", f"reference {ref}")


class PageRoute(APIRoute):
    """An APIRoute whose errors are pages and whose answers carry the security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def paged(request: Request) -> Response:
            try:
                response = await handler(request)
            except Exception as exc:
                response = _page_for(exc, request)
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            # Pages show who may do what and carry the session's CSRF token: never cached.
            response.headers.setdefault("Cache-Control", "no-store")
            return response

        return paged
