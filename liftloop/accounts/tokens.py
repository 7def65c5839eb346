"""Personal API tokens: `llt_<id>_<secret>`. The id finds the row, the secret's SHA-256 digest
is compared in constant time; the token itself is shown once and never stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from liftloop.accounts.tables import ApiToken
from liftloop.accounts.users import AccountError, UserView, active_user

PREFIX = "llt_"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def issue_token(engine: Engine, name: str) -> str:
    """A new token for an active user (their earlier tokens stay valid until revoked)."""
    if active_user(engine, name) is None:
        raise AccountError("name", f"no active user {name}")
    token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(
            ApiToken.__table__.insert().values(  # type: ignore[attr-defined]
                id=token_id, user=name, digest=_digest(secret), created_at=datetime.now(UTC)
            )
        )
    return f"{PREFIX}{token_id}_{secret}"


def revoke_tokens(engine: Engine, name: str) -> int:
    with engine.begin() as conn:
        return int(
            conn.execute(
                update(ApiToken)
                .where(col(ApiToken.user) == name)
                .where(col(ApiToken.revoked_at).is_(None))
                .values(revoked_at=datetime.now(UTC))
            ).rowcount
        )


def is_personal_token(token: str) -> bool:
    return token.startswith(PREFIX)


def user_for_token(engine: Engine, token: str) -> UserView | None:
    """The active user the token belongs to, or None (unknown, revoked, or the user disabled)."""
    token_id, _, secret = token.removeprefix(PREFIX).partition("_")
    if not token.startswith(PREFIX) or not token_id or not secret or len(token) > 200:
        return None
    with engine.connect() as conn:
        row = conn.execute(
            select(ApiToken.user, ApiToken.digest, ApiToken.revoked_at).where(
                col(ApiToken.id) == token_id
            )
        ).first()
    if row is None or row[2] is not None:
        return None
    if not hmac.compare_digest(row[1], _digest(secret)):
        return None
    return active_user(engine, row[0])
