"""The port every ad-platform budget connector implements.

Setting a budget to an amount is idempotent by nature: applying the same change twice leaves
the platform in the same state, so Temporal may retry an activity that calls it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field


class BudgetChange(BaseModel):
    model_config = ConfigDict(frozen=True)

    channel: str
    # The platform's identifier of the budget object (e.g. a Google Ads campaign budget id).
    budget_ref: str = Field(min_length=1)
    daily_amount: float = Field(ge=0.0)


class BudgetChangeOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    channel: str
    budget_ref: str
    status: Literal["applied", "validated", "failed"]
    provider_ref: str | None = None
    error: str | None = None


class TransientAdError(RuntimeError):
    """The platform could not be reached or asked us to slow down; retry later."""


class AdBudgetPort(Protocol):
    name: str

    def set_daily_budgets(self, changes: Sequence[BudgetChange]) -> list[BudgetChangeOutcome]:
        """Apply changes in order; a refusal of one change is an outcome, an outage raises."""
        ...
