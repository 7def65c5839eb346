"""The accounts' tables. Secrets are never stored: passwords as argon2id hashes, tokens and
session ids as SHA-256 digests (they are long random values, so a fast hash is enough)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel


class User(SQLModel, table=True):
    __tablename__ = "users"

    name: str = Field(primary_key=True)
    role: str
    email: str | None = None
    slack_id: str | None = Field(default=None, unique=True)
    # The approver groups the user answers for (approvals/routing.py).
    groups: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    password_hash: str | None = None
    created_at: datetime
    disabled_at: datetime | None = None


class ApiToken(SQLModel, table=True):
    __tablename__ = "api_tokens"

    id: str = Field(primary_key=True)
    user: str = Field(index=True)
    digest: str
    created_at: datetime
    revoked_at: datetime | None = None


class WebSession(SQLModel, table=True):
    __tablename__ = "web_sessions"

    digest: str = Field(primary_key=True)
    user: str = Field(index=True)
    csrf_token: str
    created_at: datetime
    expires_at: datetime
