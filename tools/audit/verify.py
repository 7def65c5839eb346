"""Walking the chain: the first entry that was altered, inserted, removed or reordered.

An entry that the next one links past was inserted; one whose link names a later entry was
moved; one whose link names no entry follows a removed one. An entry whose body no longer
hashes to its stored hash was altered; a hash whose seal does not verify was recomputed without
the key, so the chain was rewritten from there. Checkpoints must be signed by
the key, sit at every `CHECKPOINT_EVERY`-th entry and match the entry they name; one beyond the
log's end means its newest entries were removed. Entries appended after the last checkpoint
and then removed leave no trace: checkpoint before an export (`AuditLog.checkpoint`).
"""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.engine import Engine

from tools.audit.chain import (
    CHECKPOINT_EVERY,
    GENESIS,
    checkpoint_signature,
    entry_hash,
    seal_of,
)
from tools.audit.tables import AuditCheckpoint, AuditRecord
from tools.cdp.sql import as_utc, driver_time, table_of


class ChainReport(BaseModel):
    ok: bool
    entries: int
    checkpoints: int
    head: str | None = None
    first_bad: int | None = None
    reason: str | None = None


def _columns_agree(row: Any) -> bool:
    try:
        body = orjson.loads(row.body)
        at = datetime.fromisoformat(body["at"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return False
    return (
        body.get("kind") == row.kind
        and body.get("actor") == row.actor
        and body.get("campaign_id") == row.campaign_id
        and body.get("key") == row.key
        and as_utc(at) == driver_time(row.at)
    )


def _link_problem(rows: list[Any], i: int, prev: str, position: dict[str, int]) -> tuple[int, str]:
    """Why entry `i` does not link to `prev`, the hash of the entry before it."""
    row = rows[i]
    if position.get(row.prev_hash, -1) > i:
        return row.seq, "reordered: it links to an entry that now comes after it"
    if i + 1 < len(rows) and rows[i + 1].prev_hash == prev:
        return row.seq, "inserted: the entry after it links past it"
    return row.seq, "removed: the entry it links to is missing"


def _walk(rows: list[Any], key: bytes) -> tuple[int, str] | None:
    position = {row.hash: i for i, row in enumerate(rows)}
    prev = GENESIS
    for i, row in enumerate(rows):
        if row.seq != i + 1:
            missing = f"{i + 1}" if row.seq == i + 2 else f"{i + 1} to {row.seq - 1}"
            return i + 1, f"removed: entry {missing} is missing"
        if row.prev_hash != prev:
            return _link_problem(rows, i, prev, position)
        intact = entry_hash(row.prev_hash, row.body) == row.hash and _columns_agree(row)
        sealed = intact and hmac.compare_digest(seal_of(key, row.hash), row.seal)
        if not sealed:
            if i + 1 < len(rows) and rows[i + 1].prev_hash == prev:
                return row.seq, "inserted: the entry after it links past it"
            if not intact:
                return row.seq, "altered: its content does not match its hash"
            return row.seq, "rewritten: its hash is not sealed by this installation's key"
        prev = row.hash
    return None


def _check_points(rows: list[Any], points: list[Any], key: bytes) -> tuple[int, str] | None:
    at_seq = {p.seq: p for p in points}
    for seq in range(CHECKPOINT_EVERY, len(rows) + 1, CHECKPOINT_EVERY):
        if seq not in at_seq:
            return seq, f"removed: the checkpoint at entry {seq} is missing"
    for p in points:
        at = as_utc(driver_time(p.at)).isoformat(timespec="microseconds")
        expected = checkpoint_signature(key, p.seq, p.head_hash, at)
        if not hmac.compare_digest(expected, p.signature):
            return p.seq, f"forged: the checkpoint at entry {p.seq} is not signed by this key"
        if p.seq > len(rows):
            return len(rows) + 1, (
                f"removed: a checkpoint signed {p.seq} entries, the log has {len(rows)}"
            )
        if rows[p.seq - 1].hash != p.head_hash:
            return p.seq, f"rewritten: entry {p.seq} differs from its signed checkpoint"
    return None


def verify_chain(engine: Engine, key: bytes) -> ChainReport:
    log, cp = table_of(AuditRecord), table_of(AuditCheckpoint)
    with engine.connect() as conn:
        rows = list(conn.execute(select(log).order_by(log.c.seq)).all())
        points = list(conn.execute(select(cp).order_by(cp.c.seq)).all())
    problem = _walk(rows, key) or _check_points(rows, points, key)
    return ChainReport(
        ok=problem is None,
        entries=len(rows),
        checkpoints=len(points),
        head=rows[-1].hash if rows else None,
        first_bad=problem[0] if problem else None,
        reason=problem[1] if problem else None,
    )
