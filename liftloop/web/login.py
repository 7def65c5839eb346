"""Signing in and out.

The sign-in form is protected by a pre-session double-submit token: GET /login sets a random
value in the `liftloop_login_csrf` cookie (HttpOnly, SameSite=Strict, path /login) and the same
value in the form; POST /login compares the two in constant time. Another site can neither
read the cookie nor set it, so it cannot post a form that signs the browser into an account of
its choosing (login CSRF), whatever the browser's SameSite rules are.

A wrong name and a wrong password get the same answer and cost the same work
(`check_password`), so the form does not tell which names exist.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from datetime import timedelta
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from liftloop.accounts.sessions import close_session, open_session, session_for
from liftloop.accounts.users import MAX_PASSWORD_CHARS, check_password
from liftloop.web.pages import PageRoute, redirect, render
from liftloop.web.session import SESSION_COOKIE, Context, Form, read_form, tokens_match

LOGIN_CSRF_COOKIE = "liftloop_login_csrf"
_LOGIN_CSRF_TTL_S = 3600
_HOME = "/campaigns"
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")
_MAX_NAME_CHARS = 64

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def safe_next(value: object) -> str:
    """Where to go after signing in: a path on this site, else the campaign list. Anything
    with a scheme, a host, `//` or a backslash could send the browser to another site."""
    if not isinstance(value, str) or not value.startswith("/") or len(value) > 500:
        return _HOME
    if value.startswith("//") or _CONTROL.search(value):
        return _HOME
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or value.startswith(("/login", "/logout")):
        return _HOME
    return value


def _login_page(
    request: Request,
    ctx: Context,
    status: int = 200,
    *,
    error: str | None = None,
    name: str = "",
    next_page: str = _HOME,
) -> HTMLResponse:
    token = secrets.token_urlsafe(32)
    response = render(
        request, "login.html", status, error=error, name=name, next=next_page, login_csrf=token
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        max_age=_LOGIN_CSRF_TTL_S,
        path="/login",
        httponly=True,
        samesite="strict",
        secure=ctx.settings.web_secure_cookies,
    )
    return response


@router.get("/login")
async def login_form(request: Request, ctx: Context) -> Response:
    next_page = safe_next(request.query_params.get("next"))
    secret = request.cookies.get(SESSION_COOKIE, "")
    if secret and session_for(ctx.engine, secret) is not None:
        return redirect(next_page)
    return _login_page(request, ctx, next_page=next_page)


@router.post("/login")
async def login(request: Request, ctx: Context) -> Response:
    form = await read_form(request)
    next_page = safe_next(form.get("next"))
    name, password, token = form.get("name"), form.get("password"), form.get("csrf_token")
    shown = name[:_MAX_NAME_CHARS] if isinstance(name, str) else ""
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie or not isinstance(token, str) or not tokens_match(cookie, token):
        return _login_page(
            request,
            ctx,
            403,
            error="The sign-in form had expired or was not this site's; please try again.",
            name=shown,
            next_page=next_page,
        )
    user = None
    if isinstance(name, str) and isinstance(password, str) and len(name) <= _MAX_NAME_CHARS:
        # argon2 takes tens of milliseconds of CPU: off the event loop.
        user = await asyncio.to_thread(
            check_password, ctx.engine, name, password[:MAX_PASSWORD_CHARS]
        )
    if user is None:
        return _login_page(
            request, ctx, 401, error="Wrong name or password.", name=shown, next_page=next_page
        )
    old = request.cookies.get(SESSION_COOKIE, "")
    if old:
        close_session(ctx.engine, old)
    ttl = timedelta(hours=ctx.settings.web_session_hours)
    secret, _ = open_session(ctx.engine, user.name, ttl)
    response = redirect(next_page)
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=int(ttl.total_seconds()),
        path="/",
        httponly=True,
        samesite="lax",
        secure=ctx.settings.web_secure_cookies,
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(request: Request, ctx: Context, posted: Form) -> Response:
    close_session(ctx.engine, request.cookies.get(SESSION_COOKIE, ""))
    response = redirect("/login")
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        httponly=True,
        samesite="lax",
        secure=ctx.settings.web_secure_cookies,
    )
    return response
