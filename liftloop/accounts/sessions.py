"""Web sessions, kept server-side so that logout (or disabling the user) ends them at once.
The cookie holds a random secret; the table holds its digest and the session's CSRF token."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from liftloop.accounts.tables import WebSession
from liftloop.accounts.users import UserView, active_user


@dataclass(frozen=True)
class Session:
    user: UserView
    csrf_token: str


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def open_session(engine: Engine, name: str, ttl: timedelta) -> tuple[str, str]:
    """A new session for the user: (cookie secret, CSRF token)."""
    secret, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(delete(WebSession).where(col(WebSession.expires_at) < now))
        conn.execute(
            WebSession.__table__.insert().values(  # type: ignore[attr-defined]
                digest=_digest(secret),
                user=name,
                csrf_token=csrf,
                created_at=now,
                expires_at=now + ttl,
            )
        )
    return secret, csrf


def session_for(engine: Engine, secret: str) -> Session | None:
    """The live session of this cookie, or None (unknown, expired, or the user disabled)."""
    if not secret or len(secret) > 200:
        return None
    with engine.connect() as conn:
        row = conn.execute(
            select(WebSession.user, WebSession.csrf_token, WebSession.expires_at).where(
                col(WebSession.digest) == _digest(secret)
            )
        ).first()
    if row is None:
        return None
    expires = row[2] if row[2].tzinfo else row[2].replace(tzinfo=UTC)
    if expires < datetime.now(UTC):
        return None
    user = active_user(engine, row[0])
    return Session(user, row[1]) if user is not None else None


def close_session(engine: Engine, secret: str) -> None:
    with engine.begin() as conn:
        conn.execute(delete(WebSession).where(col(WebSession.digest) == _digest(secret)))
