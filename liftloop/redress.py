"""Redress: why a person got their messages, and their objection.

`messages_of` gives the provenance of each message a person was sent (decision, propensity,
variant, policy version, approval). `file_objection` records an objection to direct marketing:
honoured at once (marketing withdrawn on every channel, so the loop sends them nothing more),
put in the approvals inbox as a review task for a human, and logged in the audit log; all in
one transaction. The review's outcome is logged too (approvals/requests.py); it cannot undo
the withdrawal, which the law makes absolute.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from liftloop.loop.provenance import MessageProvenance, message_provenance
from liftloop.loop.tables import ApprovalRequest, OutboxMessage
from tools.audit import AuditEvent, AuditLog
from tools.cdp.consent import object_to_marketing
from tools.cdp.errors import UnknownIdentityError
from tools.cdp.people import resolve_profile
from tools.cdp.sql import insert

OBJECTION = "objection"
MAX_MESSAGES = 200


class Objection(BaseModel):
    reason: str = Field(min_length=1, max_length=2000)
    message_id: str | None = Field(default=None, max_length=200)


class ObjectionFiled(BaseModel):
    request_id: str
    profile_id: str
    message_id: str | None
    withdrawn: int


def messages_of(engine: Engine, person: str) -> tuple[str, list[MessageProvenance]]:
    """The person's profile id and their newest messages' provenance (at most 200);
    UnknownIdentityError for an id nobody has."""
    with engine.connect() as conn:
        pid = resolve_profile(conn, person)
        ids = conn.execute(
            select(OutboxMessage.id)
            .where(col(OutboxMessage.profile_id) == pid)
            .order_by(col(OutboxMessage.created_at).desc())
            .limit(MAX_MESSAGES)
        ).scalars()
        found = list(ids)
    return pid, [p for mid in found if (p := message_provenance(engine, mid)) is not None]


def file_objection(
    engine: Engine, audit: AuditLog, person: str, objection: Objection, *, actor: str
) -> ObjectionFiled:
    """UnknownIdentityError for an unknown person or a message that is not theirs."""
    with engine.begin() as conn:
        pid = resolve_profile(conn, person)
        message = None
        if objection.message_id is not None:
            message = conn.execute(
                select(OutboxMessage).where(
                    col(OutboxMessage.id) == objection.message_id,
                    col(OutboxMessage.profile_id) == pid,
                )
            ).first()
            if message is None:
                raise UnknownIdentityError("message_id", "no message of this person has this id")
        withdrawn = object_to_marketing(conn, pid)
        request_id = f"obj-{uuid.uuid4().hex[:16]}"
        conn.execute(
            insert(conn, ApprovalRequest).values(
                id=request_id,
                kind=OBJECTION,
                campaign_id=message.campaign_id if message else "",
                workflow_id="",
                cycle=message.cycle if message else 0,
                variant_id=message.variant_id if message else "",
                reasons=[
                    {
                        "rule_id": "redress.objection",
                        "explanation": f"objection of {pid}: {objection.reason}",
                        "severity": "escalate",
                    }
                ],
                status="pending",
                created_at=datetime.now(UTC),
            )
        )
        audit.append(
            AuditEvent(
                kind="privacy.objection",
                actor=actor,
                campaign_id=message.campaign_id if message else None,
                subject=pid,
                details={
                    "request_id": request_id,
                    "message_id": objection.message_id,
                    "marketing_withdrawn_on": withdrawn,
                },
            ),
            conn,
        )
    return ObjectionFiled(
        request_id=request_id, profile_id=pid, message_id=objection.message_id, withdrawn=withdrawn
    )
