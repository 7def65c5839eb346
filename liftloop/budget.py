"""Activities of the budget workflow: refit the MMM and allocate; push budgets to the platform."""

from __future__ import annotations

from pathlib import Path

from opentelemetry import trace
from temporalio import activity
from temporalio.exceptions import ApplicationError

from connectors.ads.port import AdBudgetPort
from tools.allocator.budget_models import (
    AllocationProposal,
    ApplyBudgetsInput,
    ApplyBudgetsResult,
    BudgetAllocationInput,
    ChannelProposal,
)
from tools.allocator.solver import AllocationRequest, ChannelSpec, allocate
from tools.measure.mmm import fit_mmm, read_mmm_csv

tracer = trace.get_tracer("liftloop.allocator")


class BudgetActivities:
    """`data_root` anchors relative source paths, so workflow inputs stay machine-independent."""

    def __init__(self, ads: AdBudgetPort, data_root: Path | None = None) -> None:
        self._ads = ads
        self._data_root = data_root

    def _path(self, csv_path: str) -> Path:
        path = Path(csv_path)
        if not path.is_absolute() and self._data_root is not None:
            path = self._data_root / path
        return path

    @activity.defn(name="budget.refit_and_allocate")
    def refit_and_allocate(self, inp: BudgetAllocationInput) -> AllocationProposal:
        with tracer.start_as_current_span("budget.refit_and_allocate") as span:
            try:
                source = inp.source
                data = read_mmm_csv(
                    self._path(source.csv_path),
                    source.date_column,
                    source.target,
                    [c.name for c in inp.channels],
                    source.controls,
                )
                fit = fit_mmm(data, inp.mmm)
                curves = {c.channel: c for c in fit.channels}
                request = AllocationRequest(
                    channels=[
                        ChannelSpec(
                            name=c.name,
                            curve=curves[c.name].response_curve,
                            current_spend=c.current_spend,
                            min_spend=c.min_spend,
                            max_spend=c.max_spend,
                            max_change=c.max_change,
                            on_off=c.on_off,
                            value_per_response=c.value_per_response,
                        )
                        for c in inp.channels
                    ],
                    budget=inp.budget,
                    groups=inp.groups,
                    objective=inp.objective,
                )
                result = allocate(request)
            except ValueError as exc:
                # Bad input does not heal by retrying.
                raise ApplicationError(str(exc), type="BadBudgetInput", non_retryable=True) from exc
            moved = sum(abs(a.change) for a in result.allocations) / 2
            proposal = AllocationProposal(
                plan_id=inp.plan_id,
                channels=[
                    ChannelProposal(
                        name=a.name,
                        budget_ref=plan.budget_ref,
                        current_spend=a.previous_spend,
                        proposed_spend=a.spend,
                        marginal_roas=a.marginal_roas,
                        roas=curves[a.name].roas,
                    )
                    for a, plan in zip(result.allocations, inp.channels, strict=True)
                ],
                expected_value=result.expected_value,
                budget_shadow_price=result.budget_shadow_price,
                shifted_share=moved / inp.budget,
                mmm_r2=fit.diagnostics.r2,
                solver=result.solver,
            )
            span.set_attributes(
                {
                    "budget.channels": len(inp.channels),
                    "budget.shifted_share": proposal.shifted_share,
                    "budget.mmm_r2": proposal.mmm_r2,
                }
            )
            return proposal

    @activity.defn(name="budget.apply")
    def apply(self, inp: ApplyBudgetsInput) -> ApplyBudgetsResult:
        with tracer.start_as_current_span("budget.apply") as span:
            outcomes = self._ads.set_daily_budgets(inp.changes)
            span.set_attributes(
                {
                    "budget.changes": len(inp.changes),
                    "budget.failed": sum(o.status == "failed" for o in outcomes),
                    "budget.connector": self._ads.name,
                }
            )
            return ApplyBudgetsResult(outcomes=outcomes)
