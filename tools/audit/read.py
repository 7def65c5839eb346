"""Reading the log back: a campaign's timeline, and CSV for spreadsheets."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.engine import Engine

from tools.audit.tables import AuditRecord
from tools.cdp.sql import cols, driver_time

CSV_COLUMNS = ("seq", "at", "kind", "actor", "campaign_id", "subject", "details", "hash")
# A spreadsheet runs a cell that starts with one of these as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class AuditEntryView(BaseModel):
    seq: int
    at: datetime
    kind: str
    actor: str
    campaign_id: str | None
    subject: str | None
    details: dict[str, Any]
    hash: str


def timeline(
    engine: Engine, *, campaign_id: str | None = None, limit: int | None = None
) -> list[AuditEntryView]:
    """Entries in the order they were written, a campaign's only when `campaign_id` is set;
    the newest `limit` when set."""
    log = cols(AuditRecord)
    query = select(log.seq, log.at, log.body, log.hash)
    if campaign_id is not None:
        query = query.where(log.campaign_id == campaign_id)
    if limit is not None:
        query = query.order_by(log.seq.desc()).limit(limit)
    with engine.connect() as conn:
        rows = sorted(conn.execute(query).all(), key=lambda r: int(r.seq))
    views = []
    for row in rows:
        body = orjson.loads(row.body)
        views.append(
            AuditEntryView(
                seq=row.seq,
                at=driver_time(row.at),
                kind=body["kind"],
                actor=body["actor"],
                campaign_id=body["campaign_id"],
                subject=body["subject"],
                details=body["details"],
                hash=row.hash,
            )
        )
    return views


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def as_csv(entries: list[AuditEntryView]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for e in entries:
        details = orjson.dumps(e.details, option=orjson.OPT_SORT_KEYS).decode()
        writer.writerow(
            [
                _cell(v)
                for v in (
                    e.seq,
                    e.at.isoformat(),
                    e.kind,
                    e.actor,
                    e.campaign_id,
                    e.subject,
                    details,
                    e.hash,
                )
            ]
        )
    return out.getvalue()
