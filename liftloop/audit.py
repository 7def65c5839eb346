"""The installation's audit log: the CDP database's chain, sealed with the audit signing key."""

from __future__ import annotations

from liftloop.credentials import audit_signing_key
from liftloop.db import engine_for
from liftloop.settings import Settings
from tools.audit import AuditLog, ChainReport, verify_chain


def audit_log(settings: Settings) -> AuditLog:
    return AuditLog(engine_for(settings.cdp_url), audit_signing_key(settings))


def verify(settings: Settings) -> ChainReport:
    return verify_chain(engine_for(settings.cdp_url), audit_signing_key(settings))
