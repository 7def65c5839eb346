"""Stable salted hashing for holdouts, arms and shards."""

from __future__ import annotations

import hashlib
import uuid
import zlib

_NS = uuid.UUID("6f1c1f0e-3c55-4a55-9b1e-1f7d0c0e9a01")


def unit_hash(*parts: object) -> float:
    """A uniform number in [0, 1) that depends only on the parts."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def shard_of(profile_id: str, shards: int) -> int:
    return zlib.crc32(profile_id.encode()) % shards


def message_id(campaign_id: str, cycle: int, profile_id: str, channel: str) -> str:
    """One id per (campaign, cycle, profile, channel): outbox key and provider idempotency key."""
    return str(uuid.uuid5(_NS, f"{campaign_id}|{cycle}|{profile_id}|{channel}"))
