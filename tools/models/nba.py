"""Next best action: score offer × channel × send hour (or do nothing) per person by expected
incremental contribution margin, mask what is not allowed, explore by Thompson sampling and
log every decision with its propensity.

For action (offer o, channel c, hour h) and person n with base conversion probability p0,
incremental conversion probability u = uplift[n, o] · channel_response[n, c] · hour_response[n, h]
and order value V:

    margin = u · V · margin_rate_o − (p0 + u) · V · discount_rate_o − cost_c

The discount is paid on every conversion under the offer, including those that would have
happened anyway; doing nothing scores 0.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tools.models.bandits import ThompsonBandit, sample_rows
from tools.models.errors import ModelInputError

tracer = trace.get_tracer("liftloop.models")

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
DO_NOTHING = "none"
CHUNK_PEOPLE = 4096


class Offer(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    discount_pct: float = Field(ge=0.0, lt=100.0)
    margin_pct: float = Field(gt=0.0, le=100.0)


class Channel(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    cost: float = Field(default=0.0, ge=0.0)


class Action(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    offer: str | None = None
    channel: str | None = None
    send_hour: int | None = None


class ActionSpace(BaseModel):
    """Offers × channels × send hours, plus doing nothing as action 0."""

    model_config = ConfigDict(frozen=True)

    offers: list[Offer] = Field(min_length=1)
    channels: list[Channel] = Field(min_length=1)
    hours: list[int] = Field(default_factory=lambda: [10], min_length=1)

    @model_validator(mode="after")
    def _valid(self) -> ActionSpace:
        if any(not 0 <= h <= 23 for h in self.hours):
            raise ValueError("hours: must be in 0..23")
        for name, ids in (
            ("offers", [o.id for o in self.offers]),
            ("channels", [c.id for c in self.channels]),
        ):
            if len(set(ids)) != len(ids):
                raise ValueError(f"{name}: ids must be unique")
        return self

    @property
    def n_actions(self) -> int:
        return 1 + len(self.offers) * len(self.channels) * len(self.hours)

    def actions(self) -> list[Action]:
        out = [Action(id=DO_NOTHING)]
        for o in self.offers:
            for c in self.channels:
                for h in self.hours:
                    out.append(
                        Action(id=f"{o.id}/{c.id}/{h:02d}", offer=o.id, channel=c.id, send_hour=h)
                    )
        return out


class NbaInputs(BaseModel):
    """Per-person model outputs and eligibility for one shard (n people)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    base_conversion: FloatArray  # (n,) P(convert | no action)
    uplift: FloatArray  # (n, offers) incremental conversion probability per offer
    order_value: FloatArray  # (n,)
    consent: BoolArray  # (n, channels)
    capped: BoolArray  # (n,) frequency cap reached: only doing nothing is allowed
    in_stock: BoolArray  # (offers,)
    channel_response: FloatArray | None = None  # (n, channels) multiplier on uplift
    hour_response: FloatArray | None = None  # (n, hours) multiplier from send-time model
    max_discount_pct: float = 100.0


class NbaDecision(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    actions: IntArray
    propensities: FloatArray
    expected_margin: FloatArray
    eligible_actions: IntArray


class DecisionContext(BaseModel):
    model_config = ConfigDict(frozen=True)

    campaign_id: str
    cycle: int = Field(ge=0)
    trace_id: str
    model_versions: dict[str, str] = Field(default_factory=dict)


class DecisionLogRecord(BaseModel):
    """One logged decision; enough to evaluate any other policy off-line later."""

    model_config = ConfigDict(frozen=True)

    campaign_id: str
    cycle: int
    profile_id: str
    action_id: str
    offer: str | None
    channel: str | None
    send_hour: int | None
    propensity: float = Field(gt=0.0, le=1.0)
    expected_margin: float
    model_versions: dict[str, str]
    feature_hash: str
    trace_id: str


def _check(inputs: NbaInputs, space: ActionSpace) -> int:
    n = int(inputs.base_conversion.shape[0])
    n_off, n_ch, n_h = len(space.offers), len(space.channels), len(space.hours)
    expected = {
        "base_conversion": (inputs.base_conversion, (n,)),
        "uplift": (inputs.uplift, (n, n_off)),
        "order_value": (inputs.order_value, (n,)),
        "consent": (inputs.consent, (n, n_ch)),
        "capped": (inputs.capped, (n,)),
        "in_stock": (inputs.in_stock, (n_off,)),
        "channel_response": (inputs.channel_response, (n, n_ch)),
        "hour_response": (inputs.hour_response, (n, n_h)),
    }
    for name, (arr, shape) in expected.items():
        if arr is None:
            continue
        if arr.shape != shape:
            raise ModelInputError(name, f"expected shape {shape}, got {arr.shape}")
        if arr.dtype != np.bool_ and not np.all(np.isfinite(arr)):
            raise ModelInputError(name, "must be finite")
    if np.any((inputs.base_conversion < 0) | (inputs.base_conversion > 1)):
        raise ModelInputError("base_conversion", "must be probabilities in [0, 1]")
    if np.any(inputs.order_value < 0):
        raise ModelInputError("order_value", "must not be negative")
    return n


def score_actions(space: ActionSpace, inputs: NbaInputs) -> tuple[FloatArray, BoolArray]:
    """Expected incremental margin and eligibility of every action: two (n, n_actions) arrays."""
    with tracer.start_as_current_span("models.nba.score") as span:
        n = _check(inputs, space)
        span.set_attribute("models.people", n)
        span.set_attribute("models.actions", space.n_actions)
        return _score(space, inputs, slice(None))


def score_chunks(
    space: ActionSpace, inputs: NbaInputs, chunk: int = 65_536
) -> Iterator[tuple[slice, FloatArray, BoolArray]]:
    """Scores and eligibility in blocks of `chunk` people, so memory stays flat at any n."""
    if chunk < 1:
        raise ModelInputError("chunk", "must be at least 1")
    with tracer.start_as_current_span("models.nba.score_chunks") as span:
        n = _check(inputs, space)
        span.set_attribute("models.people", n)
        span.set_attribute("models.actions", space.n_actions)
        for start in range(0, n, chunk):
            rows = slice(start, min(start + chunk, n))
            yield (rows, *_score(space, inputs, rows))


def _score(
    space: ActionSpace, inputs: NbaInputs, sel: IntArray | slice
) -> tuple[FloatArray, BoolArray]:
    n_ch, n_h = len(space.channels), len(space.hours)
    margin = np.array([o.margin_pct for o in space.offers]) / 100.0
    discount = np.array([o.discount_pct for o in space.offers]) / 100.0
    cost = np.array([c.cost for c in space.channels])
    value = inputs.order_value[sel]
    uplift = inputs.uplift[sel]
    m = uplift.shape[0]
    ch = inputs.channel_response[sel] if inputs.channel_response is not None else np.ones((m, n_ch))
    hr = inputs.hour_response[sel] if inputs.hour_response is not None else np.ones((m, n_h))
    # u[n, o, c, h]: broadcasting keeps this one pass with no Python loop over actions.
    u = uplift[:, :, None, None] * ch[:, None, :, None] * hr[:, None, None, :]
    p_treat = inputs.base_conversion[sel][:, None, None, None] + u
    v = value[:, None, None, None]
    score = u * v * margin[None, :, None, None] - p_treat * v * discount[None, :, None, None]
    score -= cost[None, None, :, None]
    scores = np.empty((m, space.n_actions))
    scores[:, 0] = 0.0
    scores[:, 1:] = score.reshape(m, -1)
    offer_ok = inputs.in_stock & (discount * 100.0 <= inputs.max_discount_pct + 1e-9)
    allowed = (
        offer_ok[None, :, None, None]
        & inputs.consent[sel][:, None, :, None]
        & ~inputs.capped[sel][:, None, None, None]
    )
    eligible = np.empty((m, space.n_actions), dtype=bool)
    eligible[:, 0] = True
    eligible[:, 1:] = np.broadcast_to(allowed, (m, *score.shape[1:])).reshape(m, -1)
    return scores, eligible


def exploration_bandit(space: ActionSpace, segments: int, prior_sd: float) -> ThompsonBandit:
    """A Gaussian bandit over actions per segment that learns the residual between the realised
    and the predicted incremental margin; its draws are the NBA's exploration."""
    return ThompsonBandit.create(
        [a.id for a in space.actions()], segments, "gaussian", floor=0.0, prior_sd=prior_sd
    )


def decide(
    space: ActionSpace,
    inputs: NbaInputs,
    segments: npt.ArrayLike,
    bandit: ThompsonBandit,
    *,
    seed: int,
    floor: float = 0.01,
    propensity_draws: int = 64,
) -> NbaDecision:
    """Choose one action per person: Thompson sampling over model score + residual posterior,
    with at least `floor` probability for every eligible action. Each person's action is drawn
    from their Monte Carlo policy distribution, so the logged propensity is exact."""
    if bandit.n_arms != space.n_actions or bandit.state.kind != "gaussian":
        raise ModelInputError("bandit", "must be a Gaussian bandit with one arm per action")
    if not 0.0 <= floor < 1.0:
        raise ModelInputError("floor", "must be in [0, 1)")
    if propensity_draws < 1:
        raise ModelInputError("propensity_draws", "must be at least 1")
    n = _check(inputs, space)
    seg = np.asarray(segments).ravel()
    if seg.dtype.kind == "i":
        seg = seg.astype(np.int64)
    if seg.shape != (n,) or (n and not np.issubdtype(seg.dtype, np.integer)):
        raise ModelInputError("segments", f"must be {n} integer segment indices")
    if np.any((seg < 0) | (seg >= bandit.state.segments)):
        raise ModelInputError("segments", f"must be in [0, {bandit.state.segments})")
    with tracer.start_as_current_span("models.nba.decide") as span:
        rng = np.random.default_rng(seed)
        # float32 halves the memory traffic of the (draws, people, actions) argmax.
        residual = bandit.posterior_draws(rng, propensity_draws).astype(np.float32)
        actions = np.empty(n, dtype=np.int64)
        propensities = np.empty(n)
        expected = np.empty(n)
        n_eligible = np.empty(n, dtype=np.int64)
        # People are taken segment by segment so each segment's draws broadcast without a gather.
        order = np.argsort(seg, kind="stable")
        bounds = np.searchsorted(seg[order], np.arange(bandit.state.segments + 1))
        for s_idx in range(bandit.state.segments):
            for start in range(bounds[s_idx], bounds[s_idx + 1], CHUNK_PEOPLE):
                rows = order[start : min(start + CHUNK_PEOPLE, bounds[s_idx + 1])]
                chosen, prop, score, k = _decide_rows(
                    space, inputs, rows, residual[:, s_idx], floor, rng
                )
                actions[rows], propensities[rows], expected[rows], n_eligible[rows] = (
                    chosen,
                    prop,
                    score,
                    k,
                )
        span.set_attribute("models.people", n)
        span.set_attribute("models.actions", space.n_actions)
        span.set_attribute("models.do_nothing", int((actions == 0).sum()))
        span.set_attribute("models.min_propensity", float(propensities.min()) if n else 0.0)
        return NbaDecision(
            actions=actions,
            propensities=propensities,
            expected_margin=expected,
            eligible_actions=n_eligible,
        )


def learn_from_outcomes(
    bandit: ThompsonBandit,
    segments: npt.ArrayLike,
    actions: npt.ArrayLike,
    realised_margin: npt.ArrayLike,
    expected_margin: npt.ArrayLike,
) -> None:
    """After the attribution window: one batched update of the residual posterior with
    realised minus predicted incremental margin of each decided person."""
    realised = np.asarray(realised_margin, dtype=np.float64).ravel()
    expected = np.asarray(expected_margin, dtype=np.float64).ravel()
    if realised.shape != expected.shape:
        raise ModelInputError("realised_margin", "must match expected_margin in length")
    bandit.update(segments, actions, realised - expected)


def _decide_rows(
    space: ActionSpace,
    inputs: NbaInputs,
    rows: IntArray,
    residual: npt.NDArray[np.float32],
    floor: float,
    rng: np.random.Generator,
) -> tuple[IntArray, FloatArray, FloatArray, IntArray]:
    scores, eligible = _score(space, inputs, rows)
    m, n_actions = scores.shape
    masked = np.where(eligible, scores, -np.inf).astype(np.float32)
    best = (masked[None, :, :] + residual[:, None, :]).argmax(axis=2)  # (draws, m)
    flat = (best + np.arange(m)[None, :] * n_actions).ravel()
    thompson = np.bincount(flat, minlength=m * n_actions).reshape(m, n_actions)
    thompson = thompson / residual.shape[0]
    k = eligible.sum(axis=1, keepdims=True)
    f = np.minimum(floor, 1.0 / k)
    policy = np.where(eligible, np.minimum(f + (1.0 - k * f) * thompson, 1.0), 0.0)
    chosen = sample_rows(policy, rng)
    idx = np.arange(m)
    return chosen, policy[idx, chosen], scores[idx, chosen], k[:, 0].astype(np.int64)


def feature_hashes(features: npt.ArrayLike) -> list[str]:
    """A short stable hash of each person's feature row, logged instead of the features."""
    rows = np.ascontiguousarray(np.asarray(features, dtype=np.float64))
    if rows.ndim != 2:
        raise ModelInputError("features", "must be a 2-D array (people × features)")
    return [hashlib.blake2b(row.tobytes(), digest_size=12).hexdigest() for row in rows]


def decision_records(
    space: ActionSpace,
    decision: NbaDecision,
    profile_ids: Sequence[str],
    hashes: Sequence[str],
    context: DecisionContext,
) -> list[DecisionLogRecord]:
    """The decision log rows of one shard."""
    n = decision.actions.size
    if len(profile_ids) != n or len(hashes) != n:
        raise ModelInputError("profile_ids", f"profile_ids and hashes must both have {n} entries")
    catalogue = space.actions()
    out: list[DecisionLogRecord] = []
    with tracer.start_as_current_span("models.nba.decision_records") as span:
        span.set_attribute("models.records", n)
        span.set_attribute("models.cycle", context.cycle)
        for i in range(n):
            action = catalogue[int(decision.actions[i])]
            out.append(
                DecisionLogRecord(
                    campaign_id=context.campaign_id,
                    cycle=context.cycle,
                    profile_id=profile_ids[i],
                    action_id=action.id,
                    offer=action.offer,
                    channel=action.channel,
                    send_hour=action.send_hour,
                    propensity=float(decision.propensities[i]),
                    expected_margin=float(decision.expected_margin[i]),
                    model_versions=context.model_versions,
                    feature_hash=hashes[i],
                    trace_id=context.trace_id,
                )
            )
        return out
