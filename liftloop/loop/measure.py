"""Measure: after the attribution window, the cycle's outcomes against the holdout. Everyone the
policy decided for — sent, suppressed at send time or left alone — is compared with the holdout
(intention to treat, the comparison that keeps the randomisation); the outcome is written onto
each logged decision; the policy learns; the pre-registered stop rule decides continue, ship or
stop on the cumulative, always-valid estimate."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
from sqlalchemy import bindparam, delete, func, insert, update
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlmodel import col, select
from temporalio import activity

from liftloop.loop import bandit_store, fairness, next_best_action
from liftloop.loop.fairness import FairnessRule
from liftloop.loop.payloads import CycleRef, MeasureInput, MeasureResult
from liftloop.loop.stage_kit import OUTBOX_OF_DECISION, stage_span
from liftloop.loop.tables import CycleResult, DecisionRecord, OutboxMessage
from tools.audit import AuditEvent, AuditLog
from tools.cdp.tables import PROFILE_SEGMENTS, Event
from tools.measure.design import StopRule
from tools.measure.lift import MetricStats, cumulative, lift, stop_verdict
from tools.measure.stats import GroupStats
from tools.models.registry import ModelRegistry

# What the campaign does after a measured cycle: runs on, or ends with this outcome.
CycleOutcome = Literal["running", "shipped", "stopped", "stopped_harmful", "completed"]
# The outcome as the measure span's `liftloop.decision`.
NEXT_STEP: dict[CycleOutcome, str] = {
    "running": "continue",
    "shipped": "ship",
    "stopped": "stop",
    "stopped_harmful": "stop",
    "completed": "stop",
}


def cycle_outcome(
    action: str, reason: str, *, stop_requested: bool, last_cycle: bool
) -> CycleOutcome:
    """The workflow's rule after a measured cycle (the measure span reports it): a requested
    stop wins; then the stop rule's ship or stop; then the last cycle completes the campaign."""
    if stop_requested:
        return "stopped"
    if action == "ship":
        return "shipped"
    if action == "stop":
        ends: dict[str, CycleOutcome] = {"max_cycles": "completed", "futile": "stopped"}
        return ends.get(reason, "stopped_harmful")
    return "completed" if last_cycle else "running"


class MeasureStage:
    def __init__(
        self,
        engine: Engine,
        audit: AuditLog,
        models: ModelRegistry | None = None,
        fairness_rule: FairnessRule | None = None,
    ) -> None:
        self.engine = engine
        self.audit = audit
        self.fairness_rule = fairness_rule or FairnessRule()
        # Where the nba policy keeps each campaign's uplift model; None: the model is not used.
        self.models = models

    @activity.defn(name="campaign.measure")
    def measure(self, inp: MeasureInput) -> MeasureResult:
        ref, spec = inp.ref, inp.ref.spec
        end = ref.window_from + timedelta(seconds=ref.attribution_window_s)
        with stage_span("measure", ref) as span, self.engine.begin() as conn:
            orders = (
                select(
                    Event.profile_id,
                    func.count().label("orders"),
                    func.sum(Event.properties["margin"].as_float()).label("margin"),
                )
                .where(
                    col(Event.name) == "order_completed",
                    col(Event.occurred_at) >= ref.window_from,
                    col(Event.occurred_at) < end,
                )
                .group_by(Event.profile_id)
                .subquery()
            )
            rows = conn.execute(
                sa_select(
                    col(DecisionRecord.holdout),
                    col(DecisionRecord.arm),
                    col(DecisionRecord.channel),
                    col(OutboxMessage.status),
                    func.coalesce(orders.c.orders, 0),
                    func.coalesce(orders.c.margin, 0.0),
                    col(DecisionRecord.segment),
                    col(DecisionRecord.profile_id),
                )
                .outerjoin(OutboxMessage, OUTBOX_OF_DECISION)
                .outerjoin(orders, orders.c.profile_id == DecisionRecord.profile_id)
                .where(
                    col(DecisionRecord.campaign_id) == ref.campaign_id,
                    col(DecisionRecord.cycle) == ref.cycle,
                )
            ).all()
            holdout = np.array([r[0] for r in rows], dtype=bool)
            sent = np.array([r[3] == "sent" for r in rows], dtype=bool)
            arms = np.array([r[1] for r in rows], dtype=object)
            cost = np.array([spec.cost_of(r[2]) for r in rows])
            # Contribution margin pays for the send itself.
            metrics = {
                "conversion": np.array([r[4] > 0 for r in rows], dtype=float),
                "contribution_margin": np.array([float(r[5]) for r in rows])
                - np.where(sent, cost, 0.0),
            }
            # Per arm: everyone assigned that arm, against the same holdout.
            policy_group = ~holdout
            stats = {
                name: (GroupStats.from_values(v[policy_group]), GroupStats.from_values(v[holdout]))
                for name, v in metrics.items()
            }
            lifts = {name: lift(name, *pair) for name, pair in stats.items()}
            per_arm = {
                arm: {
                    name: lift(
                        name,
                        GroupStats.from_values(v[policy_group & (arms == arm)]),
                        stats[name][1],
                    )
                    for name, v in metrics.items()
                }
                for arm in sorted(set(arms[policy_group].tolist()))
            }
            _record_outcomes(conn, ref, rows)
            if spec.experiment.policy == "thompson":
                _update_bandit(conn, ref, rows, sent, metrics["conversion"])
            if spec.experiment.policy == "nba":
                self._learn_nba(conn, ref, span)
            self._check_fairness(conn, ref, span)
            primary, decision = stop_verdict(
                StopRule(
                    min_cycles=spec.stop.min_cycles,
                    max_cycles=spec.cadence.max_cycles,
                    stop_on_harm=spec.stop.stop_when_harmful,
                ),
                ref.cycle,
                cumulative(stats, _earlier_stats(conn, ref)),
                spec.experiment.primary_metric,
                ship=spec.stop.ship_when != "never",
            )
            result = MeasureResult(
                cycle=ref.cycle,
                lifts=lifts,
                per_arm=per_arm,
                true_lift=inp.true_lift,
                sent=int(sent.sum()),
                held_out=int(holdout.sum()),
                cumulative=primary,
                decision=decision.action,
                decision_reason=decision.reason,
            )
            conn.execute(
                delete(CycleResult).where(
                    col(CycleResult.campaign_id) == ref.campaign_id,
                    col(CycleResult.cycle) == ref.cycle,
                )
            )
            conn.execute(
                insert(CycleResult).values(
                    campaign_id=ref.campaign_id,
                    cycle=ref.cycle,
                    measured_at=datetime.now(UTC),
                    result={
                        **result.model_dump(mode="json"),
                        "stats": {k: [g.model_dump() for g in v] for k, v in stats.items()},
                    },
                )
            )
            first = lifts[spec.experiment.primary_metric]
            span.set_attribute("liftloop.metric", first.metric)
            span.set_attribute("liftloop.lift.estimate", first.estimate)
            if first.ci_low is not None and first.ci_high is not None:
                span.set_attribute("liftloop.lift.ci_low", first.ci_low)
                span.set_attribute("liftloop.lift.ci_high", first.ci_high)
            # The rule's recommendation, and what the workflow does with it (it also knows
            # whether a stop was requested and whether this was the last cycle).
            outcome = cycle_outcome(
                decision.action,
                decision.reason,
                stop_requested=inp.stop_requested,
                last_cycle=inp.last_cycle,
            )
            span.set_attribute("liftloop.stop_rule.recommendation", decision.action)
            span.set_attribute("liftloop.stop_rule.reason", decision.reason)
            span.set_attribute("liftloop.stop_requested", inp.stop_requested)
            span.set_attribute("liftloop.outcome", outcome)
            why: str = decision.reason
            if inp.stop_requested:
                why = "stop_requested"
            elif outcome == "completed" and decision.action == "continue":
                why = "max_cycles"  # the rule had no verdict yet; the cycles ran out
            span.set_attribute("liftloop.decision", NEXT_STEP[outcome])
            span.set_attribute("liftloop.decision_reason", why)
            return result

    def _check_fairness(self, conn: Any, ref: CycleRef, span: Any) -> None:
        flagged = [d for d in fairness.check_cycle(conn, ref, self.fairness_rule) if d.flagged]
        span.set_attribute("liftloop.fairness.flagged", len(flagged))
        if flagged:
            self.audit.append(
                AuditEvent(
                    kind="fairness.flagged",
                    actor="worker",
                    campaign_id=ref.campaign_id,
                    subject=f"cycle-{ref.cycle}",
                    details={
                        "cycle": ref.cycle,
                        "disparities": [
                            d.model_dump(
                                include={"attribute", "metric", "ratio", "lowest", "highest"}
                            )
                            for d in flagged
                        ],
                    },
                    key=f"fairness.flagged:{ref.workflow_id}:{ref.started_at.isoformat()}:{ref.cycle}",
                ),
                conn,
            )

    def _learn_nba(self, conn: Any, ref: CycleRef, span: Any) -> None:
        """After each window the uplift model is refit on all measured cycles (served from the
        next one) and the residual posterior that drives exploration is rebuilt against it."""
        history = next_best_action.History.load(conn, ref)
        version, model, metrics = None, None, {"rows": 0.0}
        if self.models is not None:
            version, model, metrics = next_best_action.train_uplift(history, ref, self.models)
            if model is not None:
                self.audit.append(
                    AuditEvent(
                        kind="model.promote",
                        actor="worker",
                        campaign_id=ref.campaign_id,
                        subject=version,
                        details={"cycle": ref.cycle, "training_rows": int(metrics["rows"])},
                        key=f"model.promote:{version}",
                    ),
                    conn,
                )
            if model is None:
                # Not enough new data for a model this cycle: keep judging by the serving one.
                version, model, metrics["order_value"] = next_best_action.serving_model(
                    self.models, ref.campaign_id
                )
        span.set_attribute("liftloop.model.uplift", version or "none")
        span.set_attribute("liftloop.model.training_rows", int(metrics["rows"]))
        bandit = next_best_action.residual_posterior(
            history, ref.spec, model, metrics.get("order_value", 0.0)
        )
        bandit_store.store(conn, ref, bandit)


def _earlier_stats(conn: Any, ref: CycleRef) -> list[MetricStats]:
    """The statistics each earlier cycle of the campaign stored with its result."""
    results = conn.execute(
        select(CycleResult.result).where(
            col(CycleResult.campaign_id) == ref.campaign_id, col(CycleResult.cycle) < ref.cycle
        )
    ).scalars()
    return [
        {
            name: (GroupStats.model_validate(t), GroupStats.model_validate(c))
            for name, (t, c) in result.get("stats", {}).items()
        }
        for result in results
    ]


def _update_bandit(
    conn: Any, ref: CycleRef, rows: Sequence[Any], sent: np.ndarray, converted: np.ndarray
) -> None:
    """One batched posterior update per cycle from the people who were sent a message."""
    bandit = bandit_store.thompson_bandit(conn, ref)
    arm_index = {a: i for i, (a, _, _) in enumerate(ref.spec.arms)}
    idx = [int(i) for i in np.flatnonzero(sent)]
    bandit.update(
        [PROFILE_SEGMENTS.index(rows[i][6]) for i in idx],
        [arm_index[rows[i][1]] for i in idx],
        converted[idx],
    )
    bandit_store.store(conn, ref, bandit)


def _record_outcomes(conn: Any, ref: CycleRef, rows: Sequence[Any]) -> None:
    """Writes the window's outcome onto each decision, which makes the decision log a complete
    bandit log (action, propensity, reward) for off-policy evaluation and uplift training."""
    conn.execute(
        update(DecisionRecord)
        .where(
            col(DecisionRecord.campaign_id) == ref.campaign_id,
            col(DecisionRecord.cycle) == ref.cycle,
        )
        .values(outcome_orders=0, outcome_margin=0.0)
    )
    converted = [
        {"pid": r[7], "orders": int(r[4]), "margin": float(r[5])} for r in rows if r[4] > 0
    ]
    if converted:
        conn.execute(
            update(DecisionRecord)
            .where(
                col(DecisionRecord.campaign_id) == ref.campaign_id,
                col(DecisionRecord.cycle) == ref.cycle,
                col(DecisionRecord.profile_id) == bindparam("pid"),
            )
            .values(outcome_orders=bindparam("orders"), outcome_margin=bindparam("margin"))
            .execution_options(synchronize_session=False),
            converted,
        )
