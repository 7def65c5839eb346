"""Who is signed in, and what a posted form may carry.

The session lives server-side (`liftloop.accounts.sessions`); the browser holds only its random
secret in the `liftloop_session` cookie: HttpOnly (no script reads it), SameSite=Lax (another
site's form or image does not carry it), Secure behind TLS (`LIFTLOOP_WEB_SECURE_COOKIES`).

Every form carries the session's CSRF token in a hidden `csrf_token` field, and every POST but
the sign-in compares it in constant time before anything else happens: SameSite keeps other
sites' requests from carrying the cookie in current browsers, the token also holds where
SameSite does not (an older browser, a sibling subdomain).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from liftloop.accounts.sessions import Session, session_for
from liftloop.web.context import WebContext, get_web_context
from liftloop.web.pages import SESSION_STATE, LoginRequired, PageError

SESSION_COOKIE = "liftloop_session"
# A form has a handful of fields; nothing a page posts is a file.
_MAX_FIELDS = 20


def back_to(request: Request) -> str:
    """The page to return to after signing in: this one, path and query."""
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def signed_in(request: Request, ctx: Annotated[WebContext, Depends(get_web_context)]) -> Session:
    """The live session of the request's cookie, else LoginRequired."""
    secret = request.cookies.get(SESSION_COOKIE, "")
    session = session_for(ctx.engine, secret) if secret else None
    if session is None:
        raise LoginRequired(back_to(request))
    setattr(request.state, SESSION_STATE, session)
    return session


Context = Annotated[WebContext, Depends(get_web_context)]
SignedIn = Annotated[Session, Depends(signed_in)]


def require_role(session: Session, action: str, *roles: str) -> None:
    """A 403 page unless the signed-in user holds one of `roles`."""
    user = session.user
    if user.role not in roles:
        raise PageError(
            403,
            "Not allowed",
            f"{action} needs the role {' or '.join(roles)}; {user.name} is a {user.role}",
            rule="role",
        )


def tokens_match(expected: str, presented: str) -> bool:
    """Constant-time comparison of two tokens (bytes, so any text compares)."""
    return hmac.compare_digest(
        expected.encode("utf-8", "surrogatepass"), presented.encode("utf-8", "surrogatepass")
    )


async def read_form(request: Request) -> FormData:
    """The posted fields; a body no form could send is a 400 page."""
    try:
        return await request.form(max_files=0, max_fields=_MAX_FIELDS, max_part_size=1024 * 1024)
    except (MultiPartException, StarletteHTTPException, ValueError, UnicodeDecodeError):
        raise PageError(400, "Unreadable form", "the form could not be read") from None


@dataclass(frozen=True)
class Posted:
    """A form posted by the signed-in user with their session's CSRF token."""

    session: Session
    form: FormData

    def text(self, name: str, *, max_chars: int, required: bool = True) -> str:
        """A text field, or a 422 page naming the field (missing, too long, a file)."""
        values = self.form.getlist(name)
        if len(values) > 1:  # which one was meant is anybody's guess
            raise PageError(422, "Invalid field", f"{name}: given more than once")
        value = values[0] if values else None
        if value is None or value == "":
            if required:
                raise PageError(422, "Missing field", f"{name}: is required")
            return ""
        if not isinstance(value, str):
            raise PageError(422, "Invalid field", f"{name}: must be text")
        if len(value) > max_chars:
            raise PageError(422, "Invalid field", f"{name}: at most {max_chars} characters")
        return value


async def posted(request: Request, session: SignedIn) -> Posted:
    """The form, once its CSRF token is the session's; a 403 page otherwise."""
    form = await read_form(request)
    token = form.get("csrf_token")
    if not isinstance(token, str) or not tokens_match(session.csrf_token, token):
        raise PageError(
            403,
            "Form refused",
            "the form's security token is missing or wrong; reload the page and try again",
            rule="csrf",
        )
    return Posted(session, form)


Form = Annotated[Posted, Depends(posted)]
