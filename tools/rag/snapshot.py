"""Signed knowledge snapshots: the exact set of chunks a generation could have been shown."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, datetime

from tools.rag.models import SignedSnapshot


def _canonical(snapshot_id: str, created_at: str, chunk_hashes: Mapping[str, str]) -> bytes:
    payload = {"snapshot_id": snapshot_id, "created_at": created_at, "chunks": dict(chunk_hashes)}
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def snapshot_id_for(chunk_hashes: Mapping[str, str]) -> str:
    digest = hashlib.sha256(
        json.dumps(dict(chunk_hashes), sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    return f"kb-{digest[:16]}"


def sign_snapshot(chunk_hashes: Mapping[str, str], key: bytes) -> SignedSnapshot:
    ordered = dict(sorted(chunk_hashes.items()))
    snapshot_id = snapshot_id_for(ordered)
    created_at = datetime.now(UTC).isoformat(timespec="seconds")
    signature = hmac.new(key, _canonical(snapshot_id, created_at, ordered), "sha256").hexdigest()
    return SignedSnapshot(
        snapshot_id=snapshot_id, created_at=created_at, chunk_hashes=ordered, signature=signature
    )


def verify_snapshot(snapshot: SignedSnapshot, key: bytes) -> bool:
    """True when the signature matches and the id still matches the manifest."""
    if snapshot.snapshot_id != snapshot_id_for(snapshot.chunk_hashes):
        return False
    expected = hmac.new(
        key, _canonical(snapshot.snapshot_id, snapshot.created_at, snapshot.chunk_hashes), "sha256"
    ).hexdigest()
    return hmac.compare_digest(expected, snapshot.signature)
