"""Users for tests: a user with a role and their personal token, as `liftloop users add` and
`liftloop users token` make them."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from liftloop.accounts.tokens import issue_token
from liftloop.accounts.users import add_user


def user_token(
    engine: Engine,
    name: str,
    role: str,
    *,
    groups: list[str] | None = None,
    slack_id: str | None = None,
    password: str | None = None,
) -> str:
    """Add the user and return a personal token of theirs."""
    add_user(engine, name, role, groups=groups, slack_id=slack_id, password=password)
    return issue_token(engine, name)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
