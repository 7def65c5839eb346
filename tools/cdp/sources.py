"""Sources: each sender of events has its own write key; only a hash of it is stored."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.engine import Engine

from tools.cdp.errors import CdpError
from tools.cdp.sql import cols, insert, utcnow
from tools.cdp.tables import Source

# Keys from settings (LIFTLOOP_API_KEYS) act for this source.
SETTINGS_SOURCE = "api"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def create_source(engine: Engine, name: str) -> str:
    """Register a source and return its new write key (shown once, stored as a hash)."""
    if not _NAME.match(name):
        raise CdpError("name", "must be 1–64 lower-case letters, digits, '-' or '_'")
    key = f"wk_{secrets.token_urlsafe(24)}"
    with engine.begin() as conn:
        if conn.execute(select(cols(Source).name).where(cols(Source).name == name)).first():
            raise CdpError("name", f"source '{name}' exists already")
        conn.execute(
            insert(conn, Source),
            [{"name": name, "key_sha256": _digest(key), "created_at": utcnow()}],
        )
    return key


def source_for_key(engine: Engine, key: str, settings_keys: Iterable[str] = ()) -> str | None:
    """The source a write key belongs to, or None."""
    if not key:
        return None
    for allowed in settings_keys:
        if hmac.compare_digest(allowed.encode(), key.encode("utf-8", "surrogatepass")):
            return SETTINGS_SOURCE
    src = cols(Source)
    with engine.connect() as conn:
        found = conn.execute(select(src.name).where(src.key_sha256 == _digest(key))).scalar()
    return None if found is None else str(found)
