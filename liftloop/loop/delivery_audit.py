"""Checks exactly-once delivery of a campaign against what the providers actually hold."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from liftloop.loop.tables import OutboxMessage
from liftloop.settings import Settings


class DeliveryAudit(BaseModel):
    outbox_sent: int
    outbox_failed: int
    outbox_suppressed: int
    delivered: int
    # Deliveries of an outbox key beyond its first: a person receiving the same message twice.
    duplicates: int
    # Outbox rows marked sent that no provider holds.
    missing: int
    # Repeated provider calls that the idempotency key absorbed (retries after a crash).
    redeliveries_refused: int


def _smtp_ids(mailbox: Path, campaign_id: str) -> tuple[list[str], int]:
    if not mailbox.exists():
        return [], 0
    with sqlite3.connect(mailbox) as conn:
        rows = conn.execute(
            "SELECT message_id, deliveries FROM messages WHERE campaign_id = ?", (campaign_id,)
        ).fetchall()
    return [m.strip("<>").split("@", 1)[0] for m, _ in rows], sum(d - 1 for _, d in rows)


def _file_ids(outbox_dir: Path, campaign_id: str) -> list[str]:
    ids: list[str] = []
    for path in sorted(outbox_dir.glob("*.jsonl")) if outbox_dir.exists() else []:
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                rec = json.loads(line)
                if rec["campaign_id"] == campaign_id:
                    ids.append(rec["id"])
    return ids


def audit_deliveries(engine: Engine, settings: Settings, campaign_id: str) -> DeliveryAudit:
    with engine.connect() as conn:
        counts = dict(
            conn.execute(
                select(OutboxMessage.status, func.count())
                .where(OutboxMessage.campaign_id == campaign_id)
                .group_by(OutboxMessage.status)
            ).all()
        )
        keys = {
            r[0]: (r[1], r[2], r[3])
            for r in conn.execute(
                select(
                    OutboxMessage.id,
                    OutboxMessage.cycle,
                    OutboxMessage.profile_id,
                    OutboxMessage.channel,
                ).where(OutboxMessage.campaign_id == campaign_id)
            ).all()
        }
        sent_ids = set(
            conn.execute(
                select(OutboxMessage.id).where(
                    col(OutboxMessage.campaign_id) == campaign_id,
                    col(OutboxMessage.status) == "sent",
                )
            ).scalars()
        )
    smtp_ids, refused = _smtp_ids(settings.mailbox_path, campaign_id)
    delivered = smtp_ids + _file_ids(settings.outbox_dir, campaign_id)
    # A delivery whose id the outbox does not know counts under its own id.
    delivered_keys = [keys.get(i, ("?", i, "?")) for i in delivered]
    return DeliveryAudit(
        outbox_sent=counts.get("sent", 0),
        outbox_failed=counts.get("failed", 0),
        outbox_suppressed=counts.get("suppressed", 0),
        delivered=len(delivered),
        duplicates=len(delivered_keys) - len(set(delivered_keys)),
        missing=len(sent_ids - set(delivered)),
        redeliveries_refused=refused,
    )
