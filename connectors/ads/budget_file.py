"""An ad-budget sink for the embedded runtime: each applied change is a JSON line, so the budget
workflow runs end to end where no ad platform is configured."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from connectors.ads.port import BudgetChange, BudgetChangeOutcome


class BudgetFileSink:
    name = "budget-file"

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()

    def set_daily_budgets(self, changes: Sequence[BudgetChange]) -> list[BudgetChangeOutcome]:
        at = datetime.now(UTC).isoformat()
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            for change in changes:
                fh.write(json.dumps({**change.model_dump(), "applied_at": at}) + "\n")
        return [
            BudgetChangeOutcome(
                channel=c.channel,
                budget_ref=c.budget_ref,
                status="applied",
                provider_ref=f"file:{c.budget_ref}",
            )
            for c in changes
        ]
