"""Next best action: score offer × channel × send hour (or do nothing) per person by expected
incremental contribution margin, mask what is not allowed, explore by Thompson sampling and
log every decision with its propensity.

For action (offer o, channel c, hour h) and person n with base conversion probability p0,
incremental conversion probability u = uplift[n, o] · channel_response[n, c] · hour_response[n, h]
(or action_uplift[n, o, c] · hour_response[n, h] when a model predicts each offer × channel)
and order value V:

    margin = u · V · margin_rate_o − (p0 + u) · V · discount_rate_o − cost_c

The discount is paid on every conversion under the offer, including those that would have
happened anyway; doing nothing scores 0.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tools.models.bandits import ThompsonBandit
from tools.models.errors import ModelInputError

tracer = trace.get_tracer("liftloop.models")

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Float32Array = npt.NDArray[np.float32]
DO_NOTHING = "none"
# People per decide chunk and (people × draws) float32 elements per block of the Thompson
# step. Measured on a 2-core machine with 1 MiB of L2 per core: larger values amortise the
# Python loop over candidate counts; beyond these the chunk's arrays spill out of cache.
CHUNK_PEOPLE = 16_384
DRAW_BLOCK = 131_072


class OfferOption(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    discount_pct: float = Field(ge=0.0, lt=100.0)
    margin_pct: float = Field(gt=0.0, le=100.0)


class ChannelOption(BaseModel):
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

    offers: list[OfferOption] = Field(min_length=1)
    channels: list[ChannelOption] = Field(min_length=1)
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
    # (n, offers) incremental conversion probability per offer; may be omitted (or zeros) when
    # action_uplift is given.
    uplift: FloatArray | None = None
    order_value: FloatArray  # (n,)
    consent: BoolArray  # (n, channels)
    capped: BoolArray  # (n,) frequency cap reached: only doing nothing is allowed
    in_stock: BoolArray  # (offers,)
    channel_response: FloatArray | None = None  # (n, channels) multiplier on uplift
    hour_response: FloatArray | None = None  # (n, hours) multiplier from send-time model
    max_discount_pct: float = 100.0
    # (n, offers, channels) incremental conversion probability of each offer × channel, e.g. a
    # T-learner with one arm per offer × channel; replaces uplift × channel_response.
    action_uplift: FloatArray | None = None


class NbaDecision(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    actions: IntArray
    propensities: FloatArray
    expected_margin: FloatArray
    eligible_actions: IntArray


def _check(inputs: NbaInputs, space: ActionSpace) -> int:
    n = int(inputs.base_conversion.shape[0])
    n_off, n_ch, n_h = len(space.offers), len(space.channels), len(space.hours)
    if inputs.uplift is None and inputs.action_uplift is None:
        raise ModelInputError("uplift", "required unless action_uplift is given")
    if inputs.action_uplift is not None and inputs.channel_response is not None:
        # action_uplift already is the uplift through each channel; multiplying again would
        # count the channel twice, and silently ignoring it would hide a wiring mistake.
        raise ModelInputError("channel_response", "must be omitted when action_uplift is given")
    expected = {
        "base_conversion": (inputs.base_conversion, (n,)),
        "uplift": (inputs.uplift, (n, n_off)),
        "action_uplift": (inputs.action_uplift, (n, n_off, n_ch)),
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
            scores, eligible = _score(space, inputs, rows)
            yield rows, scores.T, eligible.T


def _score(
    space: ActionSpace, inputs: NbaInputs, sel: IntArray | slice
) -> tuple[FloatArray, BoolArray]:
    """Scores and eligibility as two (n_actions, m) arrays: actions first, so every numpy pass
    runs along the people axis (long, contiguous) instead of the short action axis."""
    n_off, n_ch, n_h = len(space.offers), len(space.channels), len(space.hours)
    margin = np.array([o.margin_pct for o in space.offers]) / 100.0
    discount = np.array([o.discount_pct for o in space.offers]) / 100.0
    cost = np.array([c.cost for c in space.channels])
    value = inputs.order_value[sel]
    m = value.shape[0]
    u = _incremental(inputs, sel)  # (offers, channels, hours or 1, m)
    scores = np.empty((space.n_actions, m))
    scores[0] = 0.0
    score = scores[1:].reshape(n_off, n_ch, n_h, m)  # a view: results land in `scores`
    # The same operations in the same order as u·V·margin − (p0 + u)·V·discount − cost.
    np.multiply(u, value, out=score)
    score *= margin[:, None, None, None]
    paid = u + inputs.base_conversion[sel]  # a new array: u may be a view of the inputs
    paid *= value
    paid *= discount[:, None, None, None]
    score -= paid
    score -= cost[None, :, None, None]
    offer_ok = inputs.in_stock & (discount * 100.0 <= inputs.max_discount_pct + 1e-9)
    allowed = (
        offer_ok[:, None, None]
        & inputs.consent[sel].T[None, :, :]
        & ~inputs.capped[sel][None, None, :]
    )
    eligible = np.empty((space.n_actions, m), dtype=bool)
    eligible[0] = True
    eligible[1:].reshape(n_off, n_ch, n_h, m)[...] = allowed[:, :, None, :]
    return scores, eligible


def _incremental(inputs: NbaInputs, sel: IntArray | slice) -> FloatArray:
    """u[o, c, h, person] (h of size 1 without an hour response): a missing response factor
    is skipped rather than multiplied by ones, which gives the same numbers."""
    if inputs.action_uplift is not None:
        by_action = inputs.action_uplift[sel].transpose(1, 2, 0)
    elif inputs.uplift is not None:
        offer = inputs.uplift[sel].T[:, None, :]
        by_action = (
            offer * inputs.channel_response[sel].T[None, :, :]
            if inputs.channel_response is not None
            else offer
        )
    else:  # _check refuses this before any scoring
        raise ModelInputError("uplift", "required unless action_uplift is given")
    if inputs.hour_response is None:
        out: FloatArray = by_action[:, :, None, :]
        return out
    return by_action[:, :, None, :] * inputs.hour_response[sel].T[None, None, :, :]


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
        # float32 halves the memory traffic of the Thompson step's running maximum.
        residual = bandit.posterior_draws(rng, propensity_draws).astype(np.float32)
        actions = np.empty(n, dtype=np.int64)
        propensities = np.empty(n)
        expected = np.empty(n)
        n_eligible = np.empty(n, dtype=np.int64)
        # People are taken segment by segment so each segment's draws broadcast without a gather.
        # Segment indices are small: as the smallest unsigned type, the stable sort is a radix sort.
        order = np.argsort(seg.astype(np.min_scalar_type(bandit.state.segments)), kind="stable")
        bounds = np.searchsorted(seg[order], np.arange(bandit.state.segments + 1))
        for s_idx in range(bandit.state.segments):
            if bounds[s_idx] == bounds[s_idx + 1]:
                continue
            draws = _SegmentDraws.of(residual[:, s_idx])
            for start in range(bounds[s_idx], bounds[s_idx + 1], CHUNK_PEOPLE):
                rows = order[start : min(start + CHUNK_PEOPLE, bounds[s_idx + 1])]
                chosen, prop, score, k = _decide_rows(space, inputs, rows, draws, floor, rng)
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


class _SegmentDraws(NamedTuple):
    """One segment's residual posterior draws, arranged once for all its chunks."""

    by_action: Float32Array  # (actions, draws), each action's draws contiguous
    low: Float32Array  # (actions,) smallest draw
    high: Float32Array  # (actions,) largest draw

    @classmethod
    def of(cls, residual: Float32Array) -> _SegmentDraws:
        """residual: (draws, actions)."""
        return cls(np.ascontiguousarray(residual.T), residual.min(axis=0), residual.max(axis=0))


def _decide_rows(
    space: ActionSpace,
    inputs: NbaInputs,
    rows: IntArray,
    draws: _SegmentDraws,
    floor: float,
    rng: np.random.Generator,
) -> tuple[IntArray, FloatArray, FloatArray, IntArray]:
    scores, eligible = _score(space, inputs, rows)  # (actions, m)
    thompson = _thompson_shares(_masked(scores, eligible), draws)
    k = eligible.sum(axis=0)
    f = np.minimum(floor, 1.0 / k)
    policy = np.minimum(f + (1.0 - k * f) * thompson, 1.0)
    policy *= eligible  # not a masked assignment: that branches on every element
    chosen = _sample_columns(policy, rng)
    idx = np.arange(rows.size)
    return chosen, policy[chosen, idx], scores[chosen, idx], k.astype(np.int64)


def _masked(scores: FloatArray, eligible: BoolArray) -> Float32Array:
    """float32 scores with −inf for ineligible actions. min(score, ±inf) instead of a masked
    copy: the mask is irregular, and a branch per element costs several times more."""
    sign = eligible.view(np.int8) * np.int8(2)
    sign -= np.int8(1)
    out: Float32Array = np.minimum(
        scores.astype(np.float32), np.multiply(sign, np.float32(np.inf), dtype=np.float32)
    )
    return out


def _thompson_shares(masked: Float32Array, draws: _SegmentDraws) -> FloatArray:
    """Share of the draws in which each action has the highest masked score + residual, per
    person: (actions, m), exactly the share of `(masked + residual).argmax()` over the draws.

    Most actions cannot win any draw for a given person: if score + largest draw of an action
    is below score + smallest draw of another, it loses every draw. Float rounding is
    monotone, so that test in float32 is exact. Only the remaining candidates are compared
    draw by draw, and people with a single candidate need no draws at all."""
    n_actions, m = masked.shape
    n_draws = draws.by_action.shape[1]
    floor_value = (masked + draws.low[:, None]).max(axis=0)
    candidate = (masked + draws.high[:, None]) >= floor_value
    n_cand = candidate.sum(axis=0)
    shares = np.zeros((n_actions, m))
    # A stable sort of small unsigned integers is a radix sort.
    by_count = np.argsort(n_cand.astype(np.min_scalar_type(n_actions)), kind="stable")
    edges = np.searchsorted(n_cand[by_count], np.arange(1, n_actions + 2))
    block = max(1, DRAW_BLOCK // n_draws)
    for c in range(1, n_actions + 1):
        people = by_count[edges[c - 1] : edges[c]]
        if people.size == 0:
            continue
        # Row-major nonzero: each person's candidates, in increasing action order.
        actions = np.nonzero(candidate.T[people])[1].reshape(people.size, c)
        if c == 1:
            shares[actions[:, 0], people] = 1.0
            continue
        for start in range(0, people.size, block):
            p = people[start : start + block, None]
            a = actions[start : start + block]
            wins = _win_counts(masked[a, p], draws.by_action, a)
            shares[a, p] = wins / n_draws
    return shares


def _win_counts(values: Float32Array, by_action: Float32Array, actions: IntArray) -> IntArray:
    """values, actions: (m, c) candidate scores and action indices. Per person and candidate,
    the number of draws it wins; a tie goes to the lower action index, as argmax does."""
    m, c = values.shape
    best = np.take(by_action, actions[:, 0], axis=0)  # (m, draws)
    best += values[:, :1]
    trial = np.empty_like(best)
    ahead = np.empty(best.shape, dtype=bool)
    index_type = np.min_scalar_type(c - 1)
    winner = np.zeros(best.shape, dtype=index_type)
    marked = np.empty_like(winner)
    for j in range(1, c):
        np.take(by_action, actions[:, j], axis=0, out=trial)
        trial += values[:, j : j + 1]
        np.greater(trial, best, out=ahead)  # strictly: an equal later action does not win
        np.maximum(best, trial, out=best)
        # j exceeds every earlier index, so max(winner, ahead · j) sets j exactly where ahead;
        # unlike a masked copy, this has no data-dependent branch to mispredict.
        np.multiply(ahead, index_type.type(j), out=marked)
        np.maximum(winner, marked, out=winner)
    flat = np.add(winner, (np.arange(m) * c)[:, None], dtype=np.intp)
    out: IntArray = np.bincount(flat.ravel(), minlength=m * c).reshape(m, c)
    return out


def _sample_columns(probabilities: FloatArray, rng: np.random.Generator) -> IntArray:
    """`sample_rows` for a (k, n) table: one categorical draw per column by the same rule (the
    count of cumulative sums at or below u · total). The rows are summed one by one, in the
    order np.cumsum adds them, because np.cumsum along the first axis is several times slower."""
    k, n = probabilities.shape
    cumulative = np.empty_like(probabilities)
    cumulative[0] = probabilities[0]
    for a in range(1, k):
        np.add(cumulative[a - 1], probabilities[a], out=cumulative[a])
    u = rng.random(n) * cumulative[-1]
    picks = (cumulative <= u).sum(axis=0)
    out: IntArray = np.minimum(picks, k - 1).astype(np.int64)
    return out


def feature_hashes(features: npt.ArrayLike) -> list[str]:
    """A short stable hash of each person's feature row, logged instead of the features."""
    rows = np.ascontiguousarray(np.asarray(features, dtype=np.float64))
    if rows.ndim != 2:
        raise ModelInputError("features", "must be a 2-D array (people × features)")
    return [hashlib.blake2b(row.tobytes(), digest_size=12).hexdigest() for row in rows]
