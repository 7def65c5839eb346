"""Payloads of the budget workflow and its activities: references and small summaries only."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from connectors.ads.port import BudgetChange, BudgetChangeOutcome
from tools.allocator.solver import GroupConstraint
from tools.measure.mmm import MMMConfig


class MMMSource(BaseModel):
    """Where the weekly history lives; the activity reads it, the workflow only passes this."""

    model_config = ConfigDict(frozen=True)
    csv_path: str
    date_column: str
    target: str
    controls: list[str] = Field(default_factory=list)


class ChannelPlan(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str = Field(min_length=1)
    budget_ref: str = Field(min_length=1)
    current_spend: float = Field(ge=0.0)
    min_spend: float = Field(default=0.0, ge=0.0)
    max_spend: float | None = Field(default=None, ge=0.0)
    max_change: float | None = Field(default=None, ge=0.0)
    on_off: bool = False
    value_per_response: float = Field(default=1.0, gt=0.0)


class BudgetAllocationInput(BaseModel):
    """Budgets are per MMM period (a week); ad platforms receive a daily amount."""

    plan_id: str = Field(min_length=1)
    source: MMMSource
    channels: list[ChannelPlan] = Field(min_length=1)
    groups: list[GroupConstraint] = Field(default_factory=list)
    budget: float = Field(gt=0.0)
    objective: Literal["response", "margin"] = "response"
    mmm: MMMConfig = Field(default_factory=lambda: MMMConfig(n_bootstrap=0))
    # Ask a human when more than this share of the budget would move between channels.
    approval_threshold: float = Field(default=0.2, ge=0.0, le=1.0)
    approval_timeout_s: float = Field(default=86_400.0, gt=0.0)
    days_per_period: float = Field(default=7.0, gt=0.0)


class ChannelProposal(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    budget_ref: str
    current_spend: float
    proposed_spend: float
    marginal_roas: float
    roas: float


class AllocationProposal(BaseModel):
    model_config = ConfigDict(frozen=True)
    plan_id: str
    channels: list[ChannelProposal]
    expected_value: float
    budget_shadow_price: float
    # Half the sum of absolute changes over the budget: the share of money that moves.
    shifted_share: float
    mmm_r2: float
    solver: str


class ApplyBudgetsInput(BaseModel):
    model_config = ConfigDict(frozen=True)
    plan_id: str
    changes: list[BudgetChange]


class ApplyBudgetsResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    outcomes: list[BudgetChangeOutcome]


class BudgetApprovalDecision(BaseModel):
    model_config = ConfigDict(frozen=True)
    approved: bool
    approver: str = Field(min_length=1)
    note: str = ""


class BudgetAllocationOutput(BaseModel):
    plan_id: str
    status: Literal["applied", "partially_applied", "rejected", "timed_out"]
    proposal: AllocationProposal
    approval_required: bool
    decided_by: str | None = None
    outcomes: list[BudgetChangeOutcome] = Field(default_factory=list)
