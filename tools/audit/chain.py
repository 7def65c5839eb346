"""Appending to the hash chain.

Each entry's hash is SHA-256 over the previous entry's hash and the entry's canonical body
(JSON with sorted keys, as stored), so changing, inserting, removing or reordering a row breaks
a link. Anyone with database access could recompute the hashes after a change, so each hash is
also sealed with an HMAC under the installation's audit key (kept in the data directory, not
the database), and every `CHECKPOINT_EVERY`-th entry writes a signed checkpoint of the head:
removing the newest entries is seen up to the last checkpoint.

Writers take the log's write lock (`one_writer_at_a_time`) for the read of the head and the
insert, in the caller's transaction when one is given, so the entry commits or vanishes with
the change it records and concurrent writers in any process keep one chain.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from tools.audit.tables import AuditCheckpoint, AuditRecord
from tools.cdp.sql import cols, insert, one_writer_at_a_time, utcnow

GENESIS = "0" * 64
CHECKPOINT_EVERY = 100
_LOCK = "audit_log"


class AuditEvent(BaseModel):
    """One fact for the log. `details` holds pseudonymous ids and counts, never personal data."""

    model_config = ConfigDict(frozen=True)

    kind: str = Field(pattern=r"^[a-z_]+(\.[a-z_]+)+$", max_length=64)
    actor: str = Field(min_length=1, max_length=200)
    campaign_id: str | None = Field(default=None, max_length=200)
    subject: str | None = Field(default=None, max_length=200)
    details: dict[str, Any] = Field(default_factory=dict)
    key: str | None = Field(default=None, max_length=300)


def canonical(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def body_of(event: AuditEvent, at: datetime) -> str:
    return canonical(
        {
            "at": at.isoformat(timespec="microseconds"),
            "kind": event.kind,
            "actor": event.actor,
            "campaign_id": event.campaign_id,
            "subject": event.subject,
            "details": event.details,
            "key": event.key,
        }
    )


def entry_hash(prev_hash: str, body: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def seal_of(key: bytes, digest: str) -> str:
    return hmac.new(key, f"entry:{digest}".encode(), hashlib.sha256).hexdigest()


def checkpoint_signature(key: bytes, seq: int, head_hash: str, at: str) -> str:
    message = f"checkpoint:{seq}:{head_hash}:{at}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _head(conn: Connection) -> tuple[int, str]:
    """The newest entry's number and hash; (0, GENESIS) for an empty log."""
    log = cols(AuditRecord)
    head = conn.execute(select(log.seq, log.hash).order_by(log.seq.desc()).limit(1)).first()
    return (int(head[0]), str(head[1])) if head else (0, GENESIS)


class AuditLog:
    def __init__(self, engine: Engine, key: bytes) -> None:
        if not key:
            raise ValueError("key: the audit log needs a signing key")
        self.engine = engine
        self._key = key

    def append(self, event: AuditEvent, conn: Connection | None = None) -> int | None:
        """Add `event` and return its sequence number; None when an entry with its `key` is
        there already."""
        if conn is not None:
            return self._append(conn, event)
        with self.engine.begin() as own:
            return self._append(own, event)

    def checkpoint(self, conn: Connection | None = None) -> int:
        """Sign the current head now (besides the periodic checkpoints); its sequence number."""
        if conn is not None:
            return self._checkpoint_head(conn)
        with self.engine.begin() as own:
            return self._checkpoint_head(own)

    def _append(self, conn: Connection, event: AuditEvent) -> int | None:
        one_writer_at_a_time(conn, _LOCK)
        log = cols(AuditRecord)
        if event.key is not None:
            found = conn.execute(select(log.seq).where(log.key == event.key)).first()
            if found is not None:
                return None
        last, prev = _head(conn)
        seq = last + 1
        at = utcnow()
        body = body_of(event, at)
        digest = entry_hash(prev, body)
        conn.execute(
            insert(conn, AuditRecord),
            [
                {
                    "seq": seq,
                    "key": event.key,
                    "at": at,
                    "kind": event.kind,
                    "actor": event.actor,
                    "campaign_id": event.campaign_id,
                    "body": body,
                    "prev_hash": prev,
                    "hash": digest,
                    "seal": seal_of(self._key, digest),
                }
            ],
        )
        if seq % CHECKPOINT_EVERY == 0:
            self._write_checkpoint(conn, seq, digest)
        return seq

    def _checkpoint_head(self, conn: Connection) -> int:
        one_writer_at_a_time(conn, _LOCK)
        seq, digest = _head(conn)
        if seq == 0:
            return 0
        done = conn.execute(
            select(cols(AuditCheckpoint).seq).where(cols(AuditCheckpoint).seq == seq)
        ).first()
        if done is None:
            self._write_checkpoint(conn, seq, digest)
        return seq

    def _write_checkpoint(self, conn: Connection, seq: int, head_hash: str) -> None:
        at = utcnow()
        conn.execute(
            insert(conn, AuditCheckpoint),
            [
                {
                    "seq": seq,
                    "head_hash": head_hash,
                    "at": at,
                    "signature": checkpoint_signature(
                        self._key, seq, head_hash, at.isoformat(timespec="microseconds")
                    ),
                }
            ],
        )
