"""The campaign loop's next-best-action policy (`experiment.policy: nba`).

Each person gets the action — an arm (offer × channel) or doing nothing — with the highest
expected incremental contribution margin, explored by Thompson sampling and logged with its
exact propensity (`tools.models.nba`). The expected margin comes from a T-learner uplift model
that the measure stage trains on this campaign's own randomised history (holdout as control,
one outcome model per arm) and keeps in the model registry; a Gaussian posterior per
(segment, action) learns what the model gets wrong. Before the model has data, every action
scores its cost only and the posterior's prior spread makes the first cycles explore.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt
from opentelemetry import trace
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Connection
from sqlmodel import col, select

from liftloop.loop import bandit_store
from liftloop.loop.contact_history import recent_sends
from liftloop.loop.payloads import CycleRef
from liftloop.loop.spec import CampaignSpec
from liftloop.loop.tables import DecisionRecord
from tools.cdp.sql import chunks
from tools.cdp.tables import PROFILE_SEGMENTS, Profile
from tools.models import nba
from tools.models.bandits import ThompsonBandit
from tools.models.errors import ModelInputError
from tools.models.registry import ModelRegistry
from tools.models.uplift import TLearner, UpliftModel, difference_in_means, qini_coefficient

tracer = trace.get_tracer("liftloop.loop")

DO_NOTHING = nba.DO_NOTHING
FEATURES = [*(f"segment_{s}" for s in PROFILE_SEGMENTS), "recency_months", "history_usd"]
# An arm needs this many measured people before the uplift model gets an outcome model for it;
# below that its uplift is taken as zero and only the residual posterior speaks for it.
MIN_ARM_ROWS = 200
MIN_CONVERSIONS = 20
# People per block when the residual posterior scores the campaign's measured decisions.
SCORE_CHUNK = 65_536


def action_space(spec: CampaignSpec) -> nba.ActionSpace:
    """The spec's offers × channels, sent now (one send hour), plus doing nothing."""
    return nba.ActionSpace(
        offers=[
            nba.OfferOption(id=o.id, discount_pct=o.discount_pct, margin_pct=o.margin_pct)
            for o in spec.offers
        ],
        channels=[nba.ChannelOption(id=c, cost=spec.cost_of(c)) for c in spec.channels],
        hours=[0],
    )


def action_arms(spec: CampaignSpec) -> list[tuple[str, str, str]]:
    """(arm, offer id, channel) per action index, in the action space's order."""
    return [(DO_NOTHING, DO_NOTHING, "")] + [
        (f"{o.id}@{c}", o.id, c) for o in spec.offers for c in spec.channels
    ]


def model_name(campaign_id: str) -> str:
    """The registry name of a campaign's uplift model (registry names are at most 64 chars)."""
    name = f"uplift.{campaign_id}"
    if len(name) <= 64:
        return name
    return f"{name[:50]}-{hashlib.sha256(campaign_id.encode()).hexdigest()[:12]}"


def features(conn: Connection, profile_ids: Sequence[str]) -> npt.NDArray[np.float64]:
    """FEATURES per person, from the profile's segment and traits (missing traits are 0)."""
    index = {pid: i for i, pid in enumerate(profile_ids)}
    out = np.zeros((len(profile_ids), len(FEATURES)))
    for part in chunks(profile_ids):
        for pid, segment, traits in conn.execute(
            select(Profile.id, Profile.segment, Profile.traits).where(col(Profile.id).in_(part))
        ):
            row = out[index[pid]]
            if segment in PROFILE_SEGMENTS:
                row[PROFILE_SEGMENTS.index(segment)] = 1.0
            row[len(PROFILE_SEGMENTS)] = float((traits or {}).get("recency_months") or 0.0)
            row[len(PROFILE_SEGMENTS) + 1] = float((traits or {}).get("history_usd") or 0.0)
    return out


def capped(
    conn: Connection, ref: CycleRef, shard: int, profile_ids: Sequence[str], now: datetime
) -> npt.NDArray[np.bool_]:
    """Who reached the campaign's frequency cap (sends of any campaign in the last 24 hours or
    7 days): for them only doing nothing is eligible. The send stage checks the brand policy's
    caps again per message, in the person's time zone."""
    cap = ref.spec.limits.frequency_cap
    out = np.zeros(len(profile_ids), dtype=bool)
    if cap.per_day is None and cap.per_week is None:
        return out
    sends = recent_sends(conn, ref, shard, now - timedelta(days=7))
    times = [[t for ts in sends.get(pid, {}).values() for t in ts] for pid in profile_ids]
    week = np.array([len(ts) for ts in times])
    day = np.array([sum(t >= now - timedelta(days=1) for t in ts) for ts in times])
    if cap.per_week is not None:
        out |= week >= cap.per_week
    if cap.per_day is not None:
        out |= day >= cap.per_day
    return out


def residual_bandit(conn: Connection, ref: CycleRef) -> tuple[ThompsonBandit, str]:
    """The residual posterior after the last measured cycle, or its prior; with its label."""
    stored = bandit_store.latest(conn, ref)
    if stored:
        return stored[0], f"after cycle {stored[1]}"
    return _prior(ref.spec), "prior"


def _prior(spec: CampaignSpec) -> ThompsonBandit:
    return nba.exploration_bandit(
        action_space(spec), len(PROFILE_SEGMENTS), spec.experiment.exploration_sd
    )


def serving_model(
    registry: ModelRegistry | None, campaign_id: str
) -> tuple[str | None, UpliftModel | None, float]:
    """(version label, model, order value) of the campaign's serving uplift model, if any."""
    if registry is None:
        return None, None, 0.0
    try:
        meta, artifact = registry.serving(model_name(campaign_id))
    except ModelInputError:
        return None, None, 0.0
    if not isinstance(artifact, UpliftModel):
        return None, None, 0.0
    return f"{meta.name}:{meta.version}", artifact, float(meta.metrics.get("order_value", 0.0))


def inputs(
    spec: CampaignSpec,
    x: npt.NDArray[np.float64],
    channel_masks: npt.NDArray[np.int64],
    model: UpliftModel | None,
    order_value: float,
    capped: npt.NDArray[np.bool_] | None = None,
) -> nba.NbaInputs:
    """The NBA's per-person inputs: P(convert) without a message and per arm from the model,
    consent per channel from the audience's channel bitmask, who is over the frequency cap."""
    n, n_off, n_ch = x.shape[0], len(spec.offers), len(spec.channels)
    base = np.zeros(n)
    action_uplift = np.zeros((n, n_off, n_ch))
    if model is not None and n:
        predicted = np.clip(model.predict_outcomes(x), 0.0, 1.0)
        base = predicted[:, 0]
        column = {arm: k for k, arm in enumerate(model.arms)}
        for o_idx, offer in enumerate(spec.offers):
            for c_idx, channel in enumerate(spec.channels):
                k = column.get(f"{offer.id}@{channel}")
                if k is not None:
                    action_uplift[:, o_idx, c_idx] = predicted[:, k] - base
    bits = 1 << np.arange(n_ch)
    return nba.NbaInputs(
        base_conversion=base,
        action_uplift=action_uplift,
        order_value=np.full(n, order_value),
        consent=(channel_masks[:, None] & bits[None, :]) > 0,
        capped=capped if capped is not None else np.zeros(n, dtype=bool),
        in_stock=np.ones(n_off, dtype=bool),
    )


@dataclass
class History:
    """Every measured decision of a campaign, read once per measure stage for both the uplift
    model and the residual posterior."""

    conn: Connection
    rows: list[Any]  # (cycle, profile_id, segment, arm, holdout, offer_id, orders, margin)

    @classmethod
    def load(cls, conn: Connection, ref: CycleRef) -> History:
        rows = conn.execute(
            sa_select(
                col(DecisionRecord.cycle),
                col(DecisionRecord.profile_id),
                col(DecisionRecord.segment),
                col(DecisionRecord.arm),
                col(DecisionRecord.holdout),
                col(DecisionRecord.offer_id),
                col(DecisionRecord.outcome_orders),
                col(DecisionRecord.outcome_margin),
            ).where(
                col(DecisionRecord.campaign_id) == ref.campaign_id,
                col(DecisionRecord.outcome_orders).is_not(None),
            )
        ).all()
        return cls(conn, list(rows))

    @cached_property
    def x(self) -> npt.NDArray[np.float64]:
        """FEATURES of every row, looked up once whoever asks first."""
        return features(self.conn, [r[1] for r in self.rows])


def residual_posterior(
    history: History, spec: CampaignSpec, model: UpliftModel | None, order_value: float
) -> ThompsonBandit:
    """The residual posterior of the serving model (None: no model yet, every action expects
    minus its cost), from every measured decision so far.

    It is rebuilt from the prior each cycle rather than updated: residuals learnt against an
    earlier model would be counted twice once a new model has learnt the same outcomes. Each
    past decision contributes its realised incremental margin (its margin less its segment's
    holdout mean in that cycle, less the send cost) minus what the model expects of it."""
    bandit = _prior(spec)
    arms = action_arms(spec)
    arm_index = {arm: i for i, (arm, _, _) in enumerate(arms)}
    rows = history.rows
    keep = [
        i for i, r in enumerate(rows) if not r[4] and r[3] in arm_index and r[2] in PROFILE_SEGMENTS
    ]
    if not keep:
        return bandit
    control = _holdout_means(rows)
    x = history.x[keep] if model is not None else np.zeros((len(keep), len(FEATURES)))
    everyone = np.full(len(keep), (1 << len(spec.channels)) - 1, dtype=np.int64)
    actions = np.array([arm_index[rows[i][3]] for i in keep])
    # What the model expected of each past decision, scored in blocks: the history grows by an
    # audience every cycle, and only the chosen action's score is kept.
    expected = np.empty(len(keep))
    for block, scores, _ in nba.score_chunks(
        action_space(spec), inputs(spec, x, everyone, model, order_value), SCORE_CHUNK
    ):
        expected[block] = scores[np.arange(scores.shape[0]), actions[block]]
    cost = np.array([spec.cost_of(arms[a][2]) if a else 0.0 for a in actions])
    realised = np.array(
        [float(rows[i][7] or 0.0) - control[(rows[i][0], rows[i][2])] for i in keep]
    )
    nba.learn_from_outcomes(
        bandit,
        [PROFILE_SEGMENTS.index(rows[i][2]) for i in keep],
        actions,
        realised - cost,
        expected,
    )
    return bandit


def _holdout_means(rows: Sequence[Any]) -> dict[tuple[int, str], float]:
    """Mean margin of the holdout per (cycle, segment); a segment with fewer than 30 held-out
    people in a cycle takes that cycle's overall holdout mean."""
    sums: dict[tuple[int, str], list[float]] = {}
    for cycle, _, segment, _, holdout, _, _, margin in rows:
        if holdout:
            sums.setdefault((cycle, segment), []).append(float(margin or 0.0))
            sums.setdefault((cycle, ""), []).append(float(margin or 0.0))
    out: dict[tuple[int, str], float] = {}
    for cycle in {r[0] for r in rows}:
        overall = float(np.mean(sums.get((cycle, ""), [0.0])))
        for segment in PROFILE_SEGMENTS:
            values = sums.get((cycle, segment), [])
            out[(cycle, segment)] = float(np.mean(values)) if len(values) >= 30 else overall
    return out


def train_uplift(
    history: History, ref: CycleRef, registry: ModelRegistry
) -> tuple[str | None, UpliftModel | None, dict[str, float]]:
    """Fit the T-learner on every measured decision of the campaign so far (holdout = control,
    each arm its own outcome model) and serve it. Returns (version label, model, metrics); no
    model while there is not yet enough data."""
    spec = ref.spec
    with tracer.start_as_current_span(
        "models.uplift.train_from_loop",
        attributes={"liftloop.campaign_id": ref.campaign_id, "liftloop.cycle": ref.cycle},
    ) as span:
        rows = [r for r in history.rows if r[3] != DO_NOTHING]
        arm_names = [arm for arm, _, _ in spec.arms]
        counts = dict.fromkeys(["holdout", *arm_names], 0)
        for r in rows:
            if r[3] in counts:
                counts[r[3]] += 1
        ready = [a for a in arm_names if counts[a] >= MIN_ARM_ROWS]
        conversions = sum((r[6] or 0) > 0 for r in rows)
        metrics = {"rows": float(len(rows)), "conversions": float(conversions)}
        span.set_attribute("models.rows", len(rows))
        if counts["holdout"] < MIN_ARM_ROWS or not ready or conversions < MIN_CONVERSIONS:
            span.set_attribute("models.trained", False)
            return None, None, metrics
        arms = ["holdout", *ready]
        column = {a: k for k, a in enumerate(arms)}
        keep = [i for i, r in enumerate(history.rows) if r[3] in column]
        arm = np.array([column[history.rows[i][3]] for i in keep])
        y = np.array([float((history.rows[i][6] or 0) > 0) for i in keep])
        # Conversions are rare (about 1 %): leaves sized for 20 expected conversions each keep
        # the per-person uplift from fitting noise in the traits.
        learner = TLearner(len(arms), seed=int(ref.cycle), min_events_per_leaf=20)
        learner.fit(history.x[keep], arm, y)
        metrics["order_value"] = _order_value(spec, rows)
        metrics["arms"] = float(len(ready))
        metrics.update(_evaluation(learner, history.x[keep], arm, y, arms))
        registry_name = model_name(ref.campaign_id)
        model = UpliftModel(arms=arms, features=list(FEATURES), learner=learner)
        meta = registry.register(
            registry_name,
            "uplift",
            model,
            training_start=f"cycle 0 of {ref.campaign_id}",
            training_end=f"cycle {ref.cycle} of {ref.campaign_id}",
            metrics=metrics,
            features=list(FEATURES),
        )
        # Trained on randomised assignments of this campaign only: served from the next cycle.
        registry.promote(registry_name, meta.version)
        span.set_attribute("models.trained", True)
        span.set_attribute("models.version", meta.version)
        return f"{meta.name}:{meta.version}", model, metrics


def _evaluation(
    learner: TLearner,
    x: npt.NDArray[np.float64],
    arm: npt.NDArray[np.int64],
    y: npt.NDArray[np.float64],
    arms: Sequence[str],
) -> dict[str, float]:
    """Per arm, on the rows the model was trained on (that arm and the holdout): the observed
    conversion uplift over the holdout with its 95 % interval, the model's mean predicted
    uplift beside it, and the Qini coefficient of ranking by predicted uplift (in-sample: it
    flatters the model, > 0 beats random targeting). Computed after the fit from its
    predictions, so the model and the decisions it drives are the same without it."""
    uplift = learner.predict_uplift(x)
    out: dict[str, float] = {}
    for k, name in enumerate(arms[1:], start=1):
        sel = (arm == 0) | (arm == k)
        treated = arm[sel] == k
        observed = difference_in_means(y[sel], treated)
        out[f"observed_uplift.{name}"] = observed.value
        out[f"observed_uplift.{name}.ci_low"] = observed.ci_low
        out[f"observed_uplift.{name}.ci_high"] = observed.ci_high
        out[f"predicted_uplift.{name}"] = float(uplift[sel, k - 1].mean())
        out[f"qini_in_sample.{name}"] = qini_coefficient(uplift[sel, k - 1], treated, y[sel])
    return out


def _order_value(spec: CampaignSpec, rows: Sequence[Any]) -> float:
    """Mean gross basket of treated converters: margin / (margin % − discount %)."""
    offers = {o.id: o for o in spec.offers}
    values = [
        float(r[7]) / ((offers[r[5]].margin_pct - offers[r[5]].discount_pct) / 100.0)
        for r in rows
        if not r[4]
        and (r[6] or 0) > 0
        and r[5] in offers
        and offers[r[5]].margin_pct > offers[r[5]].discount_pct
    ]
    return float(np.mean(values)) if values else 0.0
