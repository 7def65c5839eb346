"""A sent message's provenance: everything behind it, joined from the loop's own records.

The outbox row leads to the decision (arm, propensity, the policy that drew it, model versions),
the variant (template and version, model, knowledge snapshot and its signature, citations, the
guard's verdict and policy version) and, when the variant waited for a human, the approval
request (who decided, when, with which note). The person is named by their CDP profile id, a
pseudonym: never an address.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    computed_field,
)
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from liftloop.loop.tables import ApprovalRequest, DecisionRecord, OutboxMessage, Variant
from tools.cdp.sql import as_utc

UtcTime = Annotated[datetime, AfterValidator(as_utc)]


class _FromRow(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class DecisionProvenance(_FromRow):
    arm: str
    offer_id: str
    propensity: float
    policy: str
    holdout: bool
    segment: str
    decided_at: UtcTime
    model_versions: dict[str, str] | None
    expected_margin: float | None


class VariantProvenance(_FromRow):
    variant_id: str = Field(validation_alias=AliasChoices("id", "variant_id"))
    template_id: str
    template_version: str
    model: str
    snapshot_id: str | None
    snapshot_signature: str | None
    citations: list[str]
    verdict: str
    policy_version: str | None


class ApprovalProvenance(_FromRow):
    request_id: str = Field(validation_alias=AliasChoices("id", "request_id"))
    status: str
    decided_by: str | None
    decided_at: UtcTime | None
    note: str | None
    reasons: list[dict[str, Any]] = Field(exclude=True)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def rule_ids(self) -> list[str]:
        return sorted({str(r.get("rule_id")) for r in self.reasons})


class MessageProvenance(_FromRow):
    message_id: str = Field(validation_alias=AliasChoices("id", "message_id"))
    campaign_id: str
    cycle: int
    channel: str
    profile_id: str
    status: str
    sent_at: UtcTime | None
    decision: DecisionProvenance | None = None
    variant: VariantProvenance | None = None
    approval: ApprovalProvenance | None = None


def message_provenance(engine: Engine, message_id: str) -> MessageProvenance | None:
    """None when no message has this id."""
    with Session(engine) as session:
        m = session.exec(select(OutboxMessage).where(col(OutboxMessage.id) == message_id)).first()
        if m is None:
            return None
        d = session.exec(
            select(DecisionRecord).where(
                col(DecisionRecord.campaign_id) == m.campaign_id,
                col(DecisionRecord.cycle) == m.cycle,
                col(DecisionRecord.profile_id) == m.profile_id,
            )
        ).first()
        v = session.exec(select(Variant).where(col(Variant.id) == m.variant_id)).first()
        r = session.exec(
            select(ApprovalRequest).where(
                col(ApprovalRequest.variant_id) == m.variant_id, col(ApprovalRequest.kind).is_(None)
            )
        ).first()
    found = MessageProvenance.model_validate(m)
    return found.model_copy(
        update={
            "decision": DecisionProvenance.model_validate(d) if d else None,
            "variant": VariantProvenance.model_validate(v) if v else None,
            "approval": ApprovalProvenance.model_validate(r) if r else None,
        }
    )
