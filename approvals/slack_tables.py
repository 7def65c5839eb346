"""Slack's tables: where each approval request's message is (so it is posted once and updated
when decided), and the signatures of interaction requests already accepted (so none counts
twice, across every API process that shares the database)."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel


class SlackMessage(SQLModel, table=True):
    """The message of one request. A row without `ts` is a post under way (its claim, taken
    before the post so concurrent or retried calls do not post twice)."""

    __tablename__ = "slack_messages"

    request_id: str = Field(primary_key=True)
    channel_id: str | None = None
    ts: str | None = None
    posted_at: datetime


class SlackEscalation(SQLModel, table=True):
    """The escalation post of one request (the escalation channel, or a reply in the thread of
    its message), claimed like `SlackMessage`."""

    __tablename__ = "slack_escalations"

    request_id: str = Field(primary_key=True)
    channel_id: str | None = None
    ts: str | None = None
    posted_at: datetime


class SlackSeenRequest(SQLModel, table=True):
    """The signature of an accepted interaction request, kept while its timestamp could still
    pass the check (Unix seconds)."""

    __tablename__ = "slack_seen_requests"

    signature: str = Field(primary_key=True)
    seen_at: float = Field(index=True)
