"""Looking people up by any of their ids, and their stable experiment buckets."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.engine import Connection

from tools.cdp.errors import CdpError, UnknownIdentityError
from tools.cdp.identity import KINDS, normalise
from tools.cdp.sql import as_utc, chunks, cols, insert, utcnow
from tools.cdp.tables import BucketAssignment, Identity, Profile

_BA = cols(BucketAssignment)
_ID = cols(Identity)
_PR = cols(Profile)
BUCKETS = 10_000


def profile_of(conn: Connection, any_id: str) -> str | None:
    """The canonical profile id behind a user id, anonymous id, email, phone or device id."""
    t = _ID
    match = or_(*[(t.kind == k) & (t.value == normalise(k, any_id)) for k in KINDS])
    found = conn.execute(select(t.profile_id).where(match).order_by(t.kind).limit(1)).scalar()
    if found is not None:
        return str(found)
    exists = conn.execute(select(_PR.id).where(_PR.id == any_id)).scalar()
    return None if exists is None else str(exists)


def resolve_profile(conn: Connection, any_id: str) -> str:
    """The canonical profile id for any known id; UnknownIdentityError when nobody has it."""
    pid = profile_of(conn, any_id)
    if pid is None:
        raise UnknownIdentityError("id", "no profile or identity has this id")
    return pid


def _hash_bucket(salt: str, pid: str) -> int:
    digest = hashlib.sha256(f"{salt}\x1f{pid}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def profile_buckets(
    conn: Connection, campaign_salt: str, profile_ids: Sequence[str]
) -> dict[str, int]:
    """Bucket (0–9,999) per canonical profile id; the first assignment is stored and kept.

    A person's bucket is the earliest assignment held by any of their user or anonymous ids,
    so merging two people never moves the surviving one to another arm. Works in chunks with
    three queries per chunk, so a whole audience shard is bucketed in one pass."""
    if not campaign_salt:
        raise CdpError("campaign_salt", "must not be empty")
    t, b = _ID, _BA
    now = utcnow()
    out: dict[str, int] = {}
    new: list[dict[str, object]] = []
    for part in chunks(list(dict.fromkeys(profile_ids))):
        clusters: dict[str, set[str]] = {pid: {pid} for pid in part}
        for pid, value in conn.execute(
            select(t.profile_id, t.value).where(
                t.profile_id.in_(part), t.kind.in_(["user_id", "anonymous_id"])
            )
        ):
            clusters[pid].add(value)
        members = sorted({m for c in clusters.values() for m in c})
        stored: dict[str, tuple[Any, int]] = {}
        for sub in chunks(members):
            for assigned_id, assigned_at, bucket in conn.execute(
                select(b.assigned_id, b.assigned_at, b.bucket).where(
                    b.salt == campaign_salt, b.assigned_id.in_(sub)
                )
            ):
                stored[assigned_id] = (as_utc(assigned_at), bucket)
        for pid, cluster in clusters.items():
            held = sorted((stored[m][0], m) for m in cluster if m in stored)
            if held:
                out[pid] = stored[held[0][1]][1]
                continue
            out[pid] = _hash_bucket(campaign_salt, pid)
            new.append(
                {"salt": campaign_salt, "assigned_id": pid, "bucket": out[pid], "assigned_at": now}
            )
    for rows in chunks(new):
        conn.execute(
            insert(conn, BucketAssignment).on_conflict_do_nothing(
                index_elements=["salt", "assigned_id"]
            ),
            list(rows),
        )
    return out
