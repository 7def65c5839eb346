"""Users and their roles. A manager starts and steers campaigns, an approver decides approval
requests, an auditor reads, an admin manages users; nobody holds two roles, so the person who
decides is never, by role, the one who asked."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Literal, get_args

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from liftloop.accounts.tables import User

Role = Literal["manager", "approver", "auditor", "admin"]
ROLES: tuple[str, ...] = get_args(Role)
DEFAULT_GROUP = "approvers"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
SLACK_ID_PATTERN = re.compile(r"^[UW][A-Z0-9]{2,20}$")
GROUP_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 1024

_HASHER = PasswordHasher()
# Checked when the name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _HASHER.hash("no such user, no such password")


class AccountError(ValueError):
    """A refused account change: the field and why."""

    def __init__(self, field: str, reason: str) -> None:
        self.field, self.reason = field, reason
        super().__init__(f"{field}: {reason}")


class UserView(BaseModel):
    """A user as the rest of liftloop sees them (never the password hash)."""

    name: str
    role: Role
    email: str | None = None
    slack_id: str | None = None
    groups: list[str] = []
    has_password: bool = False
    disabled: bool = False


def _view(user: User) -> UserView:
    return UserView(
        name=user.name,
        role=user.role,
        email=user.email,
        slack_id=user.slack_id,
        groups=list(user.groups),
        has_password=user.password_hash is not None,
        disabled=user.disabled_at is not None,
    )


def _checked_password(password: str) -> str:
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise AccountError(
            "password", f"must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"
        )
    return _HASHER.hash(password)


def add_user(
    engine: Engine,
    name: str,
    role: str,
    *,
    email: str | None = None,
    slack_id: str | None = None,
    groups: list[str] | None = None,
    password: str | None = None,
) -> UserView:
    """Create a user; AccountError names a bad field or a name or Slack id already taken."""
    if not NAME_PATTERN.match(name):
        raise AccountError("name", "must be 1-64 of a-z, 0-9, '.', '_', '-', starting alphanumeric")
    if role not in ROLES:
        raise AccountError("role", f"must be one of {', '.join(ROLES)}")
    if email is not None and (
        len(email) > 320 or "@" not in email or any(c.isspace() for c in email)
    ):
        raise AccountError("email", "is not an e-mail address")
    if slack_id is not None and not SLACK_ID_PATTERN.match(slack_id):
        raise AccountError("slack_id", "must be a Slack user id such as U024BE7LH")
    chosen = groups if groups else ([DEFAULT_GROUP] if role == "approver" else [])
    for group in chosen:
        if not GROUP_PATTERN.match(group):
            raise AccountError("groups", f"{group!r}: 1-64 of a-z, 0-9, '_', '-'")
    user = User(
        name=name,
        role=role,
        email=email,
        slack_id=slack_id,
        groups=sorted(set(chosen)),
        password_hash=_checked_password(password) if password is not None else None,
        created_at=datetime.now(UTC),
    )
    try:
        with engine.begin() as conn:
            conn.execute(User.__table__.insert().values(**user.model_dump()))  # type: ignore[attr-defined]
    except IntegrityError:
        taken = find_user(engine, name)
        if taken is not None:
            raise AccountError("name", f"a user {name} exists already") from None
        raise AccountError("slack_id", f"{slack_id} belongs to another user") from None
    return _view(user)


def set_password(engine: Engine, name: str, password: str) -> None:
    digest = _checked_password(password)
    with engine.begin() as conn:
        changed = conn.execute(
            update(User).where(col(User.name) == name).values(password_hash=digest)
        ).rowcount
    if changed != 1:
        raise AccountError("name", f"no user {name}")


def disable_user(engine: Engine, name: str) -> None:
    """A disabled user's tokens and sessions stop working at once (they are checked per use)."""
    with engine.begin() as conn:
        changed = conn.execute(
            update(User)
            .where(col(User.name) == name)
            .where(col(User.disabled_at).is_(None))
            .values(disabled_at=datetime.now(UTC))
        ).rowcount
    if changed != 1 and find_user(engine, name) is None:
        raise AccountError("name", f"no user {name}")


def _row(engine: Engine, *where: object) -> User | None:
    with engine.connect() as conn:
        row = conn.execute(select(User).where(*where)).first()  # type: ignore[arg-type]
    return User.model_validate(row._mapping) if row is not None else None


def find_user(engine: Engine, name: str) -> UserView | None:
    """The user of this name, disabled ones included."""
    user = _row(engine, col(User.name) == name)
    return _view(user) if user is not None else None


def active_user(engine: Engine, name: str) -> UserView | None:
    """The user of this name unless unknown or disabled."""
    found = find_user(engine, name)
    return found if found is not None and not found.disabled else None


def user_for_slack(engine: Engine, slack_id: str) -> UserView | None:
    """The active user whose Slack id this is."""
    user = _row(engine, col(User.slack_id) == slack_id)
    return _view(user) if user is not None and user.disabled_at is None else None


def list_users(engine: Engine) -> list[UserView]:
    with engine.connect() as conn:
        rows = conn.execute(select(User).order_by(col(User.name))).all()
    return [_view(User.model_validate(r._mapping)) for r in rows]


def check_password(engine: Engine, name: str, password: str) -> UserView | None:
    """The active user if the password is theirs, else None (the same work either way)."""
    user = _row(engine, col(User.name) == name) if NAME_PATTERN.match(name) else None
    digest = user.password_hash if user is not None and user.password_hash else _DUMMY_HASH
    try:
        _HASHER.verify(digest, password[:MAX_PASSWORD_CHARS])
    except (VerificationError, InvalidHashError):
        return None
    if user is None or user.password_hash is None or user.disabled_at is not None:
        return None
    return _view(user)
