"""An audit log for tests that build stages or call the privacy functions directly."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from tools.audit import AuditLog

TEST_AUDIT_KEY = b"tests-only-audit-signing-key"


def audit_for(engine: Engine) -> AuditLog:
    return AuditLog(engine, TEST_AUDIT_KEY)
