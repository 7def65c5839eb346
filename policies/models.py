"""Typed proposals the engine judges, and the verdict it returns.

Proposals are frozen so that a verdict always refers to exactly what was checked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Decision(StrEnum):
    ALLOW = "allow"
    ESCALATE = "escalate"
    BLOCK = "block"


class Severity(StrEnum):
    """What a single reason does to the decision: ``notice`` is recorded but allows."""

    NOTICE = "notice"
    ESCALATE = "escalate"
    BLOCK = "block"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OfferTerms(_Frozen):
    """An offer attached to a variant: everything the copy may promise about money.

    ``price`` is the price the customer pays after the discount, ``list_price`` the price
    before it, ``amount_off`` a fixed amount off (a voucher), ``min_price`` the floor from
    the catalogue, ``margin_pct`` the gross margin at list price (before the discount). A
    discount or price the copy states that these terms do not grant blocks the variant.
    """

    discount_pct: float = Field(default=0.0, ge=0.0, le=100.0)
    price: float | None = Field(default=None, ge=0.0)
    list_price: float | None = Field(default=None, ge=0.0)
    amount_off: float | None = Field(default=None, ge=0.0)
    min_price: float | None = Field(default=None, ge=0.0)
    margin_pct: float | None = Field(default=None, le=100.0)
    segment: str = "default"
    product_class: str = "default"


class VariantProposal(_Frozen):
    """One generated content variant (per arm, segment cluster and channel), before any send.

    Slot placeholders such as ``{first_name}`` in the copy are filled per message at send time.
    Without an ``offer`` the variant grants nothing: any discount or price its copy states
    blocks it.
    """

    campaign_id: str
    arm: str
    channel: str
    market: str
    language: str
    subject: str = ""
    preheader: str = ""
    body: str
    cta: str = ""
    offer: OfferTerms | None = None
    slot_names: tuple[str, ...] = ()


class SendProposal(_Frozen):
    """One filled message about to be sent to one person.

    ``consented_purposes`` are the purposes the person consented to on this channel;
    ``prior_sends`` maps a channel to the UTC instants of earlier sends across all campaigns.
    """

    channel: str
    purpose: str
    consented_purposes: frozenset[str] = frozenset()
    opted_out: bool = False
    time_zone: str
    send_at: datetime
    prior_sends: Mapping[str, tuple[datetime, ...]] = Field(default_factory=dict)
    slots: Mapping[str, str] = Field(default_factory=dict)


class RetrievedDocument(_Frozen):
    doc_id: str
    text: str


class ModelInput(_Frozen):
    """Everything that would be sent to a model: the assembled prompt and retrieved text."""

    prompt: str
    documents: tuple[RetrievedDocument, ...] = ()


class VariantCopy(_Frozen):
    """The structured output a copywriting model must return."""

    subject: str = ""
    preheader: str = ""
    body: str
    cta: str = ""


class Reason(_Frozen):
    rule_id: str
    policy_version: str
    field: str
    span: tuple[int, int] | None = None
    severity: Severity
    explanation: str


_RANK = {Severity.NOTICE: 0, Severity.ESCALATE: 1, Severity.BLOCK: 2}
_DECISION = {0: Decision.ALLOW, 1: Decision.ESCALATE, 2: Decision.BLOCK}


def combine(reasons: Iterable[Reason]) -> Decision:
    """Any block blocks; otherwise any escalation escalates; otherwise allow."""
    return _DECISION[max((_RANK[r.severity] for r in reasons), default=0)]


class Verdict(_Frozen):
    decision: Decision
    reasons: tuple[Reason, ...] = ()
    policy_version: str

    @classmethod
    def from_reasons(cls, reasons: Iterable[Reason], policy_version: str) -> Verdict:
        found = tuple(reasons)
        # Reasons are already validated models; re-validating them would copy each one.
        return cls.model_construct(
            decision=combine(found), reasons=found, policy_version=policy_version
        )

    @property
    def rule_ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.rule_id for r in self.reasons))
