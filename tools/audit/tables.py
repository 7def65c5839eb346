"""The audit log's tables. `audit_log.body` is the exact canonical text an entry's hash covers;
the other columns repeat some of its fields so that a timeline can be queried by index."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel


class AuditRecord(SQLModel, table=True):
    __tablename__ = "audit_log"

    # Contiguous from 1: a gap is a removed entry.
    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    # Set for facts a retried activity may report again: the second report is not appended.
    key: str | None = Field(default=None, unique=True)
    at: datetime
    kind: str = Field(index=True)
    actor: str
    campaign_id: str | None = Field(default=None, index=True)
    body: str = Field(sa_column=Column(Text, nullable=False))
    prev_hash: str
    hash: str
    # HMAC of the hash under the installation's audit key: a rewritten chain cannot be resealed.
    seal: str


class AuditCheckpoint(SQLModel, table=True):
    """A signed statement that the chain had `seq` entries ending in `head_hash`."""

    __tablename__ = "audit_checkpoints"

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    head_hash: str
    at: datetime
    signature: str
