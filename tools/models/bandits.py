"""Thompson-sampling bandits, contextual by segment, with logged propensities.

Each (segment, arm) has its own posterior: Beta-Bernoulli for binary rewards, Normal for
real-valued rewards (posterior of the mean with a pooled variance estimate). For a cycle the
policy's arm probabilities per segment are estimated by Monte Carlo from the seeded RNG
(optionally top-two: the leader with probability `top_two_beta`, else the best of a fresh draw
among the other arms), mixed with a floor per arm, and each person's arm is then drawn from
that table. The logged propensity is therefore the exact probability of the policy that ran.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tools.models.errors import ModelInputError

tracer = trace.get_tracer("liftloop.models")

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BanditKind = Literal["bernoulli", "gaussian"]


class BanditState(BaseModel):
    """Everything a bandit needs between cycles; stored by the loop as JSON."""

    kind: BanditKind
    arms: list[str] = Field(min_length=1)
    segments: int = Field(ge=1)
    floor: float = Field(default=0.01, ge=0.0)
    top_two_beta: float | None = Field(default=None, gt=0.0, lt=1.0)
    prior_alpha: float = Field(default=1.0, gt=0.0)
    prior_beta: float = Field(default=1.0, gt=0.0)
    prior_mean: float = 0.0
    prior_weight: float = Field(default=1.0, gt=0.0)
    prior_sd: float = Field(default=1.0, gt=0.0)
    cycle: int = 0
    counts: list[list[float]] = Field(default_factory=list)
    reward_sums: list[list[float]] = Field(default_factory=list)
    reward_squares: list[list[float]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _shape(self) -> BanditState:
        if self.floor * len(self.arms) > 1.0:
            raise ValueError("floor: floor times the number of arms must not exceed 1")
        empty = [[0.0] * len(self.arms) for _ in range(self.segments)]
        for name in ("counts", "reward_sums", "reward_squares"):
            table = getattr(self, name)
            if not table:
                setattr(self, name, [row[:] for row in empty])
            elif len(table) != self.segments or any(len(r) != len(self.arms) for r in table):
                raise ValueError(f"{name}: must be segments x arms")
        return self


class ArmChoice(BaseModel):
    """The arms chosen for a shard of people and the probability of each choice."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    arms: IntArray
    propensities: FloatArray
    arm_probabilities: FloatArray


class ThompsonBandit:
    def __init__(self, state: BanditState) -> None:
        self.state = state
        self._n = np.asarray(state.counts, dtype=np.float64)
        self._sum = np.asarray(state.reward_sums, dtype=np.float64)
        self._sq = np.asarray(state.reward_squares, dtype=np.float64)

    @classmethod
    def create(
        cls,
        arms: list[str],
        segments: int = 1,
        kind: BanditKind = "bernoulli",
        *,
        floor: float = 0.01,
        top_two_beta: float | None = None,
        prior_mean: float = 0.0,
        prior_sd: float = 1.0,
    ) -> ThompsonBandit:
        try:
            state = BanditState(
                kind=kind,
                arms=arms,
                segments=segments,
                floor=floor,
                top_two_beta=top_two_beta,
                prior_mean=prior_mean,
                prior_sd=prior_sd,
            )
        except ValidationError as exc:
            raise ModelInputError("bandit", _first_error(exc)) from exc
        return cls(state)

    @property
    def n_arms(self) -> int:
        return len(self.state.arms)

    def posterior_draws(self, rng: np.random.Generator, draws: int) -> FloatArray:
        """Posterior draws of each (segment, arm) mean: shape (draws, segments, arms)."""
        s = self.state
        shape = (draws, s.segments, self.n_arms)
        if s.kind == "bernoulli":
            alpha = s.prior_alpha + self._sum
            beta = s.prior_beta + np.maximum(self._n - self._sum, 0.0)
            return rng.beta(alpha, beta, size=shape)
        weight = s.prior_weight + self._n
        mean = (s.prior_weight * s.prior_mean + self._sum) / weight
        # Pooled variance: the prior acts as prior_weight pseudo-observations of variance sd².
        centred = np.maximum(self._sq - self._sum**2 / np.maximum(self._n, 1.0), 0.0)
        variance = (s.prior_weight * s.prior_sd**2 + centred) / weight
        return mean + np.sqrt(variance / weight) * rng.standard_normal(shape)

    def arm_probabilities(self, seed: int, draws: int = 4000) -> FloatArray:
        """The policy's probability of each arm per segment, floor included: (segments, arms)."""
        if draws < 1:
            raise ModelInputError("draws", "must be at least 1")
        rng = np.random.default_rng(seed)
        k, s = self.n_arms, self.state.segments
        first = self.posterior_draws(rng, draws)
        leader = first.argmax(axis=2)
        counts = np.zeros((s, k))
        seg_idx = np.broadcast_to(np.arange(s), leader.shape)
        beta = self.state.top_two_beta
        if beta is None or k == 1:
            np.add.at(counts, (seg_idx, leader), 1.0)
        else:
            second = self.posterior_draws(rng, draws)
            np.put_along_axis(second, leader[..., None], -np.inf, axis=2)
            challenger = second.argmax(axis=2)
            np.add.at(counts, (seg_idx, leader), beta)
            np.add.at(counts, (seg_idx, challenger), 1.0 - beta)
        thompson = counts / draws
        floor = self.state.floor
        out: FloatArray = floor + (1.0 - k * floor) * thompson
        return out

    def choose(self, segments: npt.ArrayLike, seed: int, draws: int = 4000) -> ArmChoice:
        """Choose an arm for each person of a shard given their segment indices."""
        seg = _segments(segments, self.state.segments)
        with tracer.start_as_current_span("models.bandit.choose") as span:
            table = self.arm_probabilities(seed, draws)
            rng = np.random.default_rng([seed, 1])
            arms = sample_rows(table[seg], rng)
            span.set_attribute("models.people", int(seg.size))
            span.set_attribute("models.arms", self.n_arms)
            span.set_attribute("models.cycle", self.state.cycle)
            span.set_attribute("models.kind", self.state.kind)
            return ArmChoice(arms=arms, propensities=table[seg, arms], arm_probabilities=table)

    def update(self, segments: npt.ArrayLike, arms: npt.ArrayLike, rewards: npt.ArrayLike) -> None:
        """Add one cycle's outcomes in a batch and advance the cycle counter."""
        seg = _segments(segments, self.state.segments)
        arm = np.asarray(arms, dtype=np.int64).ravel()
        reward = np.asarray(rewards, dtype=np.float64).ravel()
        if not (seg.size == arm.size == reward.size):
            raise ModelInputError("rewards", "segments, arms and rewards must have equal length")
        if np.any((arm < 0) | (arm >= self.n_arms)):
            raise ModelInputError("arms", f"must be in [0, {self.n_arms})")
        if not np.all(np.isfinite(reward)):
            raise ModelInputError("rewards", "must be finite")
        if self.state.kind == "bernoulli" and np.any((reward < 0) | (reward > 1)):
            raise ModelInputError("rewards", "must be in [0, 1] for a Bernoulli bandit")
        with tracer.start_as_current_span("models.bandit.update") as span:
            np.add.at(self._n, (seg, arm), 1.0)
            np.add.at(self._sum, (seg, arm), reward)
            np.add.at(self._sq, (seg, arm), reward**2)
            self.state = self.state.model_copy(
                update={
                    "cycle": self.state.cycle + 1,
                    "counts": self._n.tolist(),
                    "reward_sums": self._sum.tolist(),
                    "reward_squares": self._sq.tolist(),
                }
            )
            span.set_attribute("models.observations", int(seg.size))
            span.set_attribute("models.cycle", self.state.cycle)

    def posterior_means(self) -> FloatArray:
        s = self.state
        if s.kind == "bernoulli":
            out: FloatArray = (s.prior_alpha + self._sum) / (s.prior_alpha + s.prior_beta + self._n)
            return out
        return (s.prior_weight * s.prior_mean + self._sum) / (s.prior_weight + self._n)

    def to_json(self) -> str:
        return self.state.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> ThompsonBandit:
        try:
            return cls(BanditState.model_validate_json(text))
        except ValidationError as exc:
            raise ModelInputError("bandit_state", _first_error(exc)) from exc


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else str(err["msg"])


def _segments(segments: npt.ArrayLike, n_segments: int) -> IntArray:
    seg = np.asarray(segments).ravel()
    if seg.size and not np.issubdtype(seg.dtype, np.integer):
        raise ModelInputError("segments", "must be integer segment indices")
    seg = seg.astype(np.int64)
    if np.any((seg < 0) | (seg >= n_segments)):
        raise ModelInputError("segments", f"must be in [0, {n_segments})")
    return seg


def sample_rows(probabilities: FloatArray, rng: np.random.Generator) -> IntArray:
    """One categorical draw per row of a (n, k) probability matrix."""
    cumulative = np.cumsum(probabilities, axis=1)
    u = rng.random(probabilities.shape[0]) * cumulative[:, -1]
    picks = (cumulative <= u[:, None]).sum(axis=1)
    out: IntArray = np.minimum(picks, probabilities.shape[1] - 1).astype(np.int64)
    return out
