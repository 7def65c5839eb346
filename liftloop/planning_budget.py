"""The planner's budget tool: a campaign budget split across channels by the OR-Tools allocator
(`tools/allocator/solver.py`), from what each channel has been measured to return.

A channel's response curve is built from data, never assumed:
- what one message earns: the decision log's measured outcomes (`outcome_margin`) of the people
  messaged on the channel, less those of the holdout of the same campaigns — the incremental
  contribution margin per message, as the loop measures lift;
- what one message costs: the spec's `channel_cost` defaults (a campaign may set its own);
- how many messages the budget can buy there: the reachable audience on the channel (the CDP
  with consent, `Audience.count`) times the cycles the budget covers.

So spend on a channel returns margin linearly up to its reachable audience, then nothing more.
The allocator maximises margin less spend (objective "margin"): a channel that does not pay back
its messages gets nothing, and the budget need not all be spent. A channel with too few measured
messages is reported as unmeasured and left to the campaign's experiment to learn.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import col

from agents.planner_tools import AllocateArgs, SegmentArgs
from liftloop.loop.spec import CampaignSpec
from liftloop.loop.tables import DecisionRecord
from liftloop.planning_audience import Audience
from tools.allocator.curves import ResponseCurve
from tools.allocator.solver import AllocationRequest, ChannelSpec, allocate

# Fewer measured messages (or holdout people) than this say too little about a channel.
MIN_MEASURED = 30


class ChannelResponse(BaseModel):
    model_config = ConfigDict(frozen=True)

    messages: int
    holdout: int
    margin_per_message_eur: float


def default_channel_cost() -> dict[str, float]:
    """What one message costs per channel unless a campaign says otherwise (the spec's default)."""
    costs: dict[str, float] = CampaignSpec.model_fields["channel_cost"].get_default(
        call_default_factory=True
    )
    return dict(costs)


def measured_response(engine: Engine, channels: Sequence[str]) -> dict[str, ChannelResponse | None]:
    """Per channel: the incremental margin per message over the campaigns that used it."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                col(DecisionRecord.campaign_id),
                col(DecisionRecord.holdout),
                col(DecisionRecord.channel),
                func.count(),
                func.sum(col(DecisionRecord.outcome_margin)),
            )
            .where(col(DecisionRecord.outcome_margin).is_not(None))
            .group_by(
                col(DecisionRecord.campaign_id),
                col(DecisionRecord.holdout),
                col(DecisionRecord.channel),
            )
        ).all()
    treated: dict[str, dict[str, tuple[int, float]]] = defaultdict(dict)
    holdout: dict[str, tuple[int, float]] = {}
    for campaign, is_holdout, channel, n, total in rows:
        if is_holdout:
            before = holdout.get(campaign, (0, 0.0))
            holdout[campaign] = (before[0] + int(n), before[1] + float(total or 0.0))
        elif channel in channels:
            treated[channel][campaign] = (int(n), float(total or 0.0))
    out: dict[str, ChannelResponse | None] = {}
    for channel in channels:
        sent = treated.get(channel, {})
        campaigns = [c for c in sent if c in holdout]
        n_sent = sum(sent[c][0] for c in campaigns)
        n_held = sum(holdout[c][0] for c in campaigns)
        if n_sent < MIN_MEASURED or n_held < MIN_MEASURED:
            out[channel] = None
            continue
        lift = sum(sent[c][1] for c in campaigns) / n_sent - (
            sum(holdout[c][1] for c in campaigns) / n_held
        )
        out[channel] = ChannelResponse(
            messages=n_sent, holdout=n_held, margin_per_message_eur=round(lift, 6)
        )
    return out


class Budget:
    """The allocate tool of one planner."""

    def __init__(self, engine: Engine, audience: Audience) -> None:
        self.engine = engine
        self.audience = audience

    def allocate(self, args: AllocateArgs) -> dict[str, Any]:
        channels = list(dict.fromkeys(args.channels))
        reach = self.audience.count(
            SegmentArgs(segment=args.segment, channels=channels, purpose=args.purpose)
        )["reachable_by_channel"]
        costs = default_channel_cost()
        measured = measured_response(self.engine, channels)
        inputs = {
            c: {
                "reachable": reach[c],
                "cost_per_message_eur": costs[c],
                "measured_messages": m.messages if (m := measured[c]) else 0,
                "margin_per_message_eur": m.margin_per_message_eur if m else None,
            }
            for c in channels
        }
        unmeasured = [c for c in channels if measured[c] is None]
        specs = []
        for c in channels:
            response = measured[c]
            capacity = reach[c] * args.cycles
            if response is None or capacity == 0 or costs[c] <= 0:
                continue
            spend_cap = capacity * costs[c]
            earned = capacity * max(response.margin_per_message_eur, 0.0)
            curve = ResponseCurve(kind="pwl", xs=[0.0, spend_cap], ys=[0.0, earned])
            # No more messages than people reachable: a bound, not just the curve's flat end.
            specs.append(ChannelSpec(name=c, curve=curve, max_spend=spend_cap))
        if not specs:
            reason = (
                f"no measured response for {', '.join(unmeasured)}: the decision log needs "
                f"at least {MIN_MEASURED} measured messages and holdout people per channel"
                if unmeasured
                else "nobody in the segment is reachable on these channels"
            )
            return {"unavailable": reason, "inputs": inputs}
        result = allocate(
            AllocationRequest(channels=specs, budget=args.budget_eur, objective="margin")
        )
        allocations = {
            a.name: {
                "spend_eur": round(a.spend, 2),
                "messages": int(a.spend / costs[a.name]),
                "expected_margin_eur": round(a.expected_value, 2),
                "marginal_roas": round(a.marginal_roas, 4),
            }
            for a in result.allocations
        }
        return {
            "objective": "margin",
            "budget_eur": args.budget_eur,
            "cycles": args.cycles,
            "total_spend_eur": round(result.total_spend, 2),
            "expected_margin_eur": round(result.expected_value, 2),
            "allocations": allocations,
            "unmeasured": unmeasured,
            "inputs": inputs,
            "solver": result.solver,
        }
