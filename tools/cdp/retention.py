"""Retention of the CDP's own rows: events and quarantined messages older than their limit.

Profiles, identities, traits and consents are kept while the person is a customer (erasure
removes them); the aggregates built from events (features, engagement counts) are kept, so
expiring raw events changes no decision input already computed.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.engine import Connection

from tools.cdp.sql import cols, table_of
from tools.cdp.tables import Event, QuarantinedMessage


def expire_cdp_rows(
    conn: Connection, *, events_before: datetime, quarantine_before: datetime
) -> dict[str, int]:
    """Delete events that occurred and quarantined messages that arrived before the given
    times; the rows deleted per table."""
    events = conn.execute(
        delete(table_of(Event)).where(cols(Event).occurred_at < events_before)
    ).rowcount
    quarantine = conn.execute(
        delete(table_of(QuarantinedMessage)).where(
            cols(QuarantinedMessage).received_at < quarantine_before
        )
    ).rowcount
    return {"events": int(events), "quarantine": int(quarantine)}
