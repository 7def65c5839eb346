"""Approval requests written straight into the tables, for the tests that need no campaign."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import Engine

from liftloop.loop.tables import ApprovalRequest, Variant


def add_request(engine: Engine, name: str, **overrides: Any) -> str:
    """A pending request on a variant of campaign `name`; returns its id."""
    variant_id = f"{name}:0:a1"
    now = datetime.now(UTC)
    request: dict[str, Any] = {
        "id": f"apr-{name}-0-a1",
        "campaign_id": name,
        "workflow_id": f"campaign-{name}",
        "cycle": 0,
        "variant_id": variant_id,
        "reasons": [{"rule_id": "campaign.max_discount", "explanation": "20 % is above 15 %"}],
        "status": "pending",
        "created_at": now,
        "approver_group": "approvers",
        "escalation_group": "leads",
        "deadline_at": now + timedelta(hours=1),
    }
    request.update(overrides)
    with engine.begin() as conn:
        conn.execute(
            Variant.__table__.insert().values(  # type: ignore[attr-defined]
                id=variant_id,
                campaign_id=name,
                cycle=0,
                arm="a1",
                channel="email",
                template_id="t",
                template_version="1",
                subject="Hello {first_name}",
                body="20 % off until Sunday, {first_name}.",
                citations=[],
            )
        )
        conn.execute(ApprovalRequest.__table__.insert().values(**request))  # type: ignore[attr-defined]
    return str(request["id"])


def set_status(engine: Engine, request_id: str, **values: Any) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(ApprovalRequest).where(ApprovalRequest.id == request_id).values(**values)  # type: ignore[arg-type]
        )
