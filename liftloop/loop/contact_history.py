"""What a shard's audience was already sent, across all campaigns: the input of frequency caps."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_
from sqlalchemy import select as sa_select
from sqlmodel import col

from liftloop.loop.payloads import CycleRef
from liftloop.loop.tables import AudienceMember, OutboxMessage

Sends = dict[str, dict[str, tuple[datetime, ...]]]


def recent_sends(conn: Any, ref: CycleRef, shard: int, since: datetime) -> Sends:
    """profile id → channel → times (aware UTC) of the messages sent to the shard's audience
    members since `since`."""
    rows = conn.execute(
        sa_select(
            col(OutboxMessage.profile_id), col(OutboxMessage.channel), col(OutboxMessage.sent_at)
        )
        .join(
            AudienceMember,
            and_(
                col(AudienceMember.profile_id) == OutboxMessage.profile_id,
                col(AudienceMember.campaign_id) == ref.campaign_id,
                col(AudienceMember.cycle) == ref.cycle,
                col(AudienceMember.shard) == shard,
            ),
        )
        .where(col(OutboxMessage.status) == "sent", col(OutboxMessage.sent_at) >= since)
    ).all()
    prior: dict[str, dict[str, list[datetime]]] = {}
    for pid, channel, sent_at in rows:
        at = sent_at if sent_at.tzinfo else sent_at.replace(tzinfo=UTC)
        prior.setdefault(pid, {}).setdefault(channel, []).append(at)
    return {pid: {ch: tuple(ts) for ch, ts in chans.items()} for pid, chans in prior.items()}
