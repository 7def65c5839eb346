"""Consent per purpose and channel: the latest statement per (profile, channel, purpose) wins.

Statements come from consent messages (with source, time and lawful basis) and from connector
events that withdraw consent: unsubscribes, spam complaints and hard bounces.

A statement dated later than the moment consent is read has not been made yet and does not
count. Ingestion refuses such stamps and never dates a statement after its arrival
(tools/cdp/ingest.py); this keeps rows stored before it did (a grant dated 9999-12-31) from
outranking every later withdrawal.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from tools.cdp.sql import as_utc, cols, insert, utcnow
from tools.cdp.tables import Consent, Profile

_CO = cols(Consent)
_PR = cols(Profile)
PURPOSES = ("marketing", "personalisation", "analytics", "ads")
CHANNELS = ("email", "sms", "push", "ads")
# The only events that can withdraw consent (see `withdrawals`).
WITHDRAWING_EVENTS = frozenset({"unsubscribed", "complaint_received", "message_bounced"})


def withdrawals(event: str, properties: dict[str, Any]) -> list[tuple[str, str]]:
    """(channel, purpose) pairs an event withdraws: an unsubscribe the purposes it names
    (marketing by default); a complaint or a hard bounce every purpose on the channel."""
    if event not in WITHDRAWING_EVENTS:
        return []
    channel = properties.get("channel", "email")
    if channel not in CHANNELS:
        return []
    if event == "unsubscribed":
        named = properties.get("purposes")
        purposes = [p for p in named if p in PURPOSES] if isinstance(named, list) else []
        return [(channel, p) for p in dict.fromkeys(purposes or ["marketing"])]
    if event == "complaint_received" or (
        event == "message_bounced" and properties.get("bounce_type") == "hard"
    ):
        return [(channel, p) for p in PURPOSES]
    return []


def latest_consent(
    purpose: str, channels: Iterable[str], *, now: datetime | None = None
) -> Select[tuple[str, str, bool]]:
    """(profile_id, channel, granted) of the latest statement for each profile and channel,
    among those made by `now` (the current time by default)."""
    at = utcnow() if now is None else as_utc(now)
    ranked = (
        select(
            _CO.profile_id,
            _CO.channel,
            _CO.granted,
            func.row_number()
            .over(
                partition_by=(_CO.profile_id, _CO.channel),
                order_by=(_CO.recorded_at.desc(), _CO.id.desc()),
            )
            .label("rn"),
        )
        .where(_CO.purpose == purpose, _CO.channel.in_(list(channels)), _CO.recorded_at <= at)
        .subquery()
    )
    return select(ranked.c.profile_id, ranked.c.channel, ranked.c.granted).where(ranked.c.rn == 1)


def has_consent(
    purpose: str, channel: str, profile_id: Any = None, *, now: datetime | None = None
) -> ColumnElement[bool]:
    """True where the latest statement for the profile made by `now` (the current time by
    default) grants purpose on channel.

    `profile_id` is the column to correlate with (profiles.id by default), so the condition
    composes into segment queries."""
    pid = _PR.id if profile_id is None else profile_id
    at = utcnow() if now is None else as_utc(now)
    latest = (
        select(_CO.granted)
        .where(
            and_(
                _CO.profile_id == pid,
                _CO.purpose == purpose,
                _CO.channel == channel,
                _CO.recorded_at <= at,
            )
        )
        .order_by(_CO.recorded_at.desc(), _CO.id.desc())
        .limit(1)
        .correlate_except(Consent)
        .scalar_subquery()
    )
    return latest.is_(True)


def object_to_marketing(conn: Connection, profile_id: str) -> int:
    """Record the person's objection to direct marketing (GDPR Art. 21(2)), which must be
    honoured without review: a withdrawal of marketing on every channel, dated now, so it
    outranks every earlier grant. The number of statements written."""
    now = utcnow()
    rows = [
        {
            "profile_id": profile_id,
            "channel": channel,
            "purpose": "marketing",
            "granted": False,
            "source": "redress",
            "lawful_basis": "objection",
            "recorded_at": now,
        }
        for channel in CHANNELS
    ]
    conn.execute(insert(conn, Consent), rows)
    return len(rows)
