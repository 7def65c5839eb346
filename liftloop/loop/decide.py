"""Decide: each audience member of a shard is held out (the CDP's stored bucket) or gets an
action from the campaign's policy — uniform, thompson or nba — and every decision is logged with
its exact propensity, so any other policy can be evaluated off-line."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from opentelemetry import trace
from sqlalchemy import delete, insert
from sqlalchemy.engine import Engine
from sqlmodel import col, select
from temporalio import activity

from liftloop.loop import next_best_action
from liftloop.loop.bandit_store import thompson_bandit
from liftloop.loop.hashing import unit_hash
from liftloop.loop.payloads import CycleRef, DecideResult, ShardInput
from liftloop.loop.stage_kit import policy_seed, stage_span
from liftloop.loop.tables import AudienceMember, DecisionRecord
from tools.cdp.people import BUCKETS, profile_buckets
from tools.cdp.tables import PROFILE_SEGMENTS
from tools.models import nba
from tools.models.registry import ModelRegistry


class DecideStage:
    def __init__(self, engine: Engine, models: ModelRegistry | None = None) -> None:
        self.engine = engine
        # Where the nba policy keeps each campaign's uplift model; None: the model is not used.
        self.models = models

    @activity.defn(name="campaign.decide")
    def decide(self, inp: ShardInput) -> DecideResult:
        ref, spec = inp.ref, inp.ref.spec
        holdout_share = spec.experiment.holdout_pct / 100.0
        now = datetime.now(UTC)
        with (
            stage_span(
                "decide",
                ref,
                **{"liftloop.shard": inp.shard, "liftloop.policy": spec.experiment.policy},
            ) as span,
            self.engine.begin() as conn,
        ):
            members = conn.execute(
                select(
                    AudienceMember.profile_id, AudienceMember.segment, AudienceMember.channels
                ).where(
                    col(AudienceMember.campaign_id) == ref.campaign_id,
                    col(AudienceMember.cycle) == ref.cycle,
                    col(AudienceMember.shard) == inp.shard,
                )
            ).all()
            # The holdout is the CDP's stored bucket of the person, kept across identity merges
            # and cycles: a person stays in the holdout (or out of it) all campaign.
            buckets = profile_buckets(conn, spec.salt, [m[0] for m in members])
            cut = holdout_share * BUCKETS
            held_rows = [m for m in members if buckets[m[0]] < cut]
            policy_rows = [m for m in members if buckets[m[0]] >= cut]
            picks = (
                self._nba_picks(conn, ref, inp.shard, policy_rows, span)
                if spec.experiment.policy == "nba"
                else _table_picks(conn, ref, policy_rows)
            )
            base = {"campaign_id": ref.campaign_id, "cycle": ref.cycle, "shard": inp.shard}
            base |= {"policy": spec.experiment.policy, "decided_at": now} | dict.fromkeys(
                ("expected_margin", "model_versions", "feature_hash", "trace_id")
            )
            rows = [
                base
                | {"profile_id": pid, "segment": seg, "holdout": True, "arm": "holdout"}
                | {"offer_id": "", "channel": "", "propensity": holdout_share}
                for pid, seg, _ in held_rows
            ]
            per_arm: dict[str, int] = {}
            for (pid, seg, _), pick in zip(policy_rows, picks, strict=True):
                per_arm[pick["arm"]] = per_arm.get(pick["arm"], 0) + 1
                pick["propensity"] *= 1 - holdout_share
                rows.append(base | {"profile_id": pid, "segment": seg, "holdout": False} | pick)
            conn.execute(
                delete(DecisionRecord).where(
                    col(DecisionRecord.campaign_id) == ref.campaign_id,
                    col(DecisionRecord.cycle) == ref.cycle,
                    col(DecisionRecord.shard) == inp.shard,
                )
            )
            if rows:
                conn.execute(insert(DecisionRecord), rows)
            span.set_attribute("liftloop.decided", len(rows))
            span.set_attribute("liftloop.held_out", len(held_rows))
            return DecideResult(
                shard=inp.shard, decided=len(rows), held_out=len(held_rows), per_arm=per_arm
            )

    def _nba_picks(
        self, conn: Any, ref: CycleRef, shard: int, people: Sequence[Any], span: Any
    ) -> list[dict[str, Any]]:
        """nba: the action with the highest expected incremental margin under Thompson
        exploration, doing nothing included; logged with its model versions and feature hash."""
        spec = ref.spec
        pids = [p[0] for p in people]
        x = next_best_action.features(conn, pids)
        version, model, order_value = next_best_action.serving_model(self.models, ref.campaign_id)
        bandit, bandit_version = next_best_action.residual_bandit(conn, ref)
        decision = nba.decide(
            next_best_action.action_space(spec),
            next_best_action.inputs(
                spec,
                x,
                np.array([p[2] for p in people], dtype=np.int64),
                model,
                order_value,
                next_best_action.capped(conn, ref, shard, pids, datetime.now(UTC)),
            ),
            np.array([PROFILE_SEGMENTS.index(p[1]) for p in people], dtype=np.int64),
            bandit,
            seed=policy_seed(ref) + shard,
            floor=spec.experiment.min_arm_share,
        )
        versions = {"uplift": version or "none", "residual_bandit": bandit_version}
        trace_id = format(trace.get_current_span().get_span_context().trace_id, "032x")
        hashes = nba.feature_hashes(x) if len(pids) else []
        arms = next_best_action.action_arms(spec)
        span.set_attribute("liftloop.model.uplift", versions["uplift"])
        span.set_attribute("liftloop.do_nothing", int((decision.actions == 0).sum()))
        return [
            {
                "arm": arms[a][0],
                "offer_id": arms[a][1],
                "channel": arms[a][2],
                "propensity": float(decision.propensities[i]),
                "expected_margin": float(decision.expected_margin[i]),
                "model_versions": versions,
                "feature_hash": hashes[i],
                "trace_id": trace_id,
            }
            for i, a in enumerate(decision.actions.tolist())
        ]


def _table_picks(conn: Any, ref: CycleRef, people: Sequence[Any]) -> list[dict[str, Any]]:
    """uniform / thompson: each person's arm drawn from P(arm | segment), restricted to the
    channels they consented to; the propensity is that restricted probability."""
    spec, arms = ref.spec, ref.spec.arms
    table = (
        thompson_bandit(conn, ref).arm_probabilities(seed=policy_seed(ref))
        if spec.experiment.policy == "thompson"
        else np.full((len(PROFILE_SEGMENTS), len(arms)), 1.0 / len(arms))
    )
    # The restricted policy depends only on segment and consented channels: a handful of
    # distinct rows per shard.
    restricted: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
    picks = []
    for pid, seg, mask in people:
        if (seg, mask) not in restricted:
            eligible = [bool(mask & (1 << spec.channels.index(c))) for _, _, c in arms]
            p = np.where(eligible, table[PROFILE_SEGMENTS.index(seg)], 0.0)
            restricted[(seg, mask)] = (p / p.sum(), np.cumsum(p / p.sum()))
        probs, cumulative = restricted[(seg, mask)]
        u = unit_hash(spec.salt, ref.cycle, "arm", pid)
        k = min(int(np.searchsorted(cumulative, u, side="right")), len(arms) - 1)
        arm, offer, channel = arms[k]
        picks.append({"arm": arm, "offer_id": offer.id, "channel": channel, "propensity": probs[k]})
    return picks
