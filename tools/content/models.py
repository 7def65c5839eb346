"""Boundary models of generation: the loop's request and result, the agent's typed draft."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

CopyChannel = Literal["email", "push", "sms"]
BlockKind = Literal["greeting", "paragraph", "offer", "product", "claim", "closing", "footer"]
SlotType = Literal["text", "url"]


class BodyBlock(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: BlockKind
    text: str


class CopyDraft(BaseModel):
    """What the copywriter agent returns; personal data only ever appears as `{{slot}}` markers."""

    model_config = ConfigDict(frozen=True)

    subject: str = Field(description="Subject line or push title, no personal data")
    preheader: str = Field(default="", description="Email preheader; empty for push")
    body_blocks: list[BodyBlock] = Field(description="Body in reading order")
    call_to_action: str = Field(description="Button or link text")
    claims_used: list[str] = Field(
        default_factory=list, description="ids of approved legal claims the copy relies on"
    )
    citations: list[str] = Field(
        default_factory=list, description="doc ids of the knowledge the copy is based on"
    )


class SlotSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    type: SlotType
    required: bool = True


class GuardReason(BaseModel):
    model_config = ConfigDict(frozen=True)

    rule_id: str
    message: str


class GuardResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    passed: bool
    reasons: tuple[GuardReason, ...] = ()
    guard: str = "builtin"


class VariantRequest(BaseModel):
    """One content variant per (campaign, arm, channel); never carries a person's data."""

    # Unknown fields are refused so a profile attribute cannot slip into a prompt by accident.
    model_config = ConfigDict(frozen=True, extra="forbid")

    campaign_id: str
    arm: str
    channel: CopyChannel = "email"
    language: str = "en"
    market: str = "*"
    template_id: str = "winback_email"
    brief: str = ""
    offer_description: str = ""
    discount_pct: float = Field(default=0.0, ge=0, le=100)
    offer_end: str = ""
    product_focus: str = ""
    # Where the usage is booked in the ledger: the campaign's cycle and what the call was for.
    cycle: int | None = Field(default=None, ge=0)
    job: Literal["generate", "eval"] = "generate"
    groups: tuple[str, ...] = ("public",)


class TokenUsage(BaseModel):
    model_config = ConfigDict(frozen=True)

    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0
    cost_eur: float = 0.0
    cached: bool = False


class GeneratedVariant(BaseModel):
    model_config = ConfigDict(frozen=True)

    campaign_id: str
    arm: str
    channel: CopyChannel
    language: str
    subject: str
    preheader: str
    body: str
    body_blocks: tuple[BodyBlock, ...]
    cta: str
    slots: tuple[SlotSpec, ...]
    claims_used: tuple[str, ...]
    citations: tuple[str, ...]
    cited_chunks: tuple[str, ...]
    snapshot_id: str
    template_id: str
    template_version: str
    model: str
    usage: TokenUsage
    attempts: int
    guard: GuardResult
    escalated: bool
