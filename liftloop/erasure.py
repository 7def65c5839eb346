"""A person's erasure and export across every store that holds their rows: the CDP's own, and
the campaign loop's (its tables and the file outboxes under `Settings.outbox_dir`), composed
here so that neither knows of the other."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine

from liftloop.credentials import audit_signing_key
from liftloop.loop.privacy import LoopRecords, OutboxFiles
from liftloop.settings import Settings, get_settings
from tools.audit import AuditLog
from tools.cdp import privacy
from tools.cdp.contracts import ContractRegistry
from tools.cdp.privacy import ErasureReport, PersonStore


def stores(settings: Settings | None = None) -> tuple[PersonStore, ...]:
    """The loop's participants: its tables, then the file outboxes of `settings` (the
    process's settings by default)."""
    settings = settings or get_settings()
    return (LoopRecords(), OutboxFiles(settings.outbox_dir))


def erase_person(
    engine: Engine,
    any_id: str,
    registry: ContractRegistry,
    *,
    actor: str,
    settings: Settings | None = None,
) -> ErasureReport:
    settings = settings or get_settings()
    return privacy.erase_person(
        engine,
        any_id,
        registry,
        actor=actor,
        audit=AuditLog(engine, audit_signing_key(settings)),
        stores=stores(settings),
    )


def export_person(
    engine: Engine, any_id: str, *, actor: str, settings: Settings | None = None
) -> dict[str, Any]:
    settings = settings or get_settings()
    return privacy.export_person(
        engine,
        any_id,
        actor=actor,
        audit=AuditLog(engine, audit_signing_key(settings)),
        stores=stores(settings),
    )
