"""Off-policy evaluation over decision logs: IPW, self-normalised IPW, direct method and
doubly robust estimates of a target policy's value, with normal-approximation 95 % intervals,
and a reader for the Open Bandit Dataset logs (Saito et al. 2020, arXiv:2008.07146)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict

from tools.models.errors import ModelInputError

tracer = trace.get_tracer("liftloop.models")

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Estimator = Literal["ipw", "snipw", "dm", "dr"]
Z95 = 1.959963984540054


class OpeEstimate(BaseModel):
    model_config = ConfigDict(frozen=True)

    estimator: Estimator
    value: float
    ci_low: float
    ci_high: float
    rounds: int


class BanditLog(BaseModel):
    """Logged bandit feedback: the context is a small integer (e.g. a segment or a slot)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    contexts: IntArray
    actions: IntArray
    rewards: FloatArray
    propensities: FloatArray
    n_contexts: int
    n_actions: int


def _estimate(name: Estimator, terms: FloatArray, value: float | None = None) -> OpeEstimate:
    n = terms.size
    centre = float(terms.mean()) if value is None else value
    se = float(terms.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    return OpeEstimate(
        estimator=name, value=centre, ci_low=centre - Z95 * se, ci_high=centre + Z95 * se, rounds=n
    )


def evaluate_policy(
    log: BanditLog, target: FloatArray, reward_model: FloatArray | None = None
) -> dict[Estimator, OpeEstimate]:
    """Estimate the value of `target` (per-context action probabilities, contexts × actions)
    from `log`. `reward_model` (contexts × actions expected reward) enables DM and DR."""
    shape = (log.n_contexts, log.n_actions)
    if target.shape != shape:
        raise ModelInputError("target", f"expected shape {shape}, got {target.shape}")
    if np.any(target < 0) or not np.allclose(target.sum(axis=1), 1.0, atol=1e-6):
        raise ModelInputError("target", "each row must be a probability distribution")
    if reward_model is not None and reward_model.shape != shape:
        raise ModelInputError("reward_model", f"expected shape {shape}, got {reward_model.shape}")
    with tracer.start_as_current_span("models.ope.evaluate") as span:
        weights = target[log.contexts, log.actions] / log.propensities
        r = log.rewards
        out: dict[Estimator, OpeEstimate] = {"ipw": _estimate("ipw", weights * r)}
        snipw = float((weights * r).sum() / weights.sum())
        # Delta-method terms of the ratio estimator give its standard error.
        out["snipw"] = _estimate("snipw", weights * (r - snipw) / weights.mean() + snipw, snipw)
        if reward_model is not None:
            baseline = (target * reward_model).sum(axis=1)[log.contexts]
            out["dm"] = _estimate("dm", baseline)
            correction = weights * (r - reward_model[log.contexts, log.actions])
            out["dr"] = _estimate("dr", baseline + correction)
        span.set_attribute("models.rounds", int(r.size))
        span.set_attribute("models.max_weight", float(weights.max()))
        for name, est in out.items():
            span.set_attribute(f"models.ope.{name}", est.value)
        return out


def reward_table(log: BanditLog, prior_strength: float = 20.0) -> FloatArray:
    """Mean reward per (context, action), shrunk towards the context's mean: a simple reward
    model for DM and DR that never extrapolates beyond what was logged."""
    shape = (log.n_contexts, log.n_actions)
    flat = log.contexts * log.n_actions + log.actions
    counts = np.bincount(flat, minlength=log.n_contexts * log.n_actions).reshape(shape)
    sums = np.bincount(flat, weights=log.rewards, minlength=counts.size).reshape(shape)
    ctx_mean = sums.sum(axis=1) / np.maximum(counts.sum(axis=1), 1)
    out: FloatArray = (sums + prior_strength * ctx_mean[:, None]) / (counts + prior_strength)
    return out


def action_frequencies(log: BanditLog) -> FloatArray:
    """The empirical action distribution per context: the time-averaged policy that ran."""
    flat = log.contexts * log.n_actions + log.actions
    counts = np.bincount(flat, minlength=log.n_contexts * log.n_actions).astype(np.float64)
    table = counts.reshape(log.n_contexts, log.n_actions)
    totals = table.sum(axis=1, keepdims=True)
    uniform = np.full_like(table, 1.0 / log.n_actions)
    out: FloatArray = np.where(totals > 0, table / np.maximum(totals, 1.0), uniform)
    return out


def read_obd_log(path: Path, n_actions: int | None = None) -> BanditLog:
    """Read an Open Bandit Dataset CSV: the context is the slot position, the action the item."""
    if not path.is_file():
        raise ModelInputError("logs", f"file not found: {path.name}")
    items: list[int] = []
    positions: list[int] = []
    clicks: list[float] = []
    props: list[float] = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        needed = {"item_id", "position", "click", "propensity_score"}
        if reader.fieldnames is None or not needed <= set(reader.fieldnames):
            raise ModelInputError("logs", f"CSV must have columns {sorted(needed)}")
        for line, row in enumerate(reader, start=2):
            try:
                items.append(int(row["item_id"]))
                positions.append(int(row["position"]))
                clicks.append(float(row["click"]))
                props.append(float(row["propensity_score"]))
            except (TypeError, ValueError) as exc:
                raise ModelInputError("logs", f"line {line}: {exc}") from exc
    return make_log(
        np.asarray(positions) - min(positions),
        np.asarray(items),
        np.asarray(clicks),
        np.asarray(props),
        n_actions=n_actions,
    )


def read_decision_log(path: Path) -> BanditLog:
    """Read JSON Lines of {"context", "action", "reward", "propensity"} (integers for the
    context and action), e.g. exported from liftloop's decision log joined with outcomes."""
    if not path.is_file():
        raise ModelInputError("logs", f"file not found: {path.name}")
    cols: dict[str, list[float]] = {"context": [], "action": [], "reward": [], "propensity": []}
    with path.open(encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
                for key, values in cols.items():
                    values.append(float(row[key]))
            except (ValueError, KeyError, TypeError) as exc:
                raise ModelInputError("logs", f"line {line}: {exc!r}") from exc
    return make_log(
        np.asarray(cols["context"], dtype=np.int64),
        np.asarray(cols["action"], dtype=np.int64),
        np.asarray(cols["reward"]),
        np.asarray(cols["propensity"]),
    )


def make_log(
    contexts: npt.ArrayLike,
    actions: npt.ArrayLike,
    rewards: npt.ArrayLike,
    propensities: npt.ArrayLike,
    *,
    n_contexts: int | None = None,
    n_actions: int | None = None,
) -> BanditLog:
    ctx = np.asarray(contexts, dtype=np.int64).ravel()
    act = np.asarray(actions, dtype=np.int64).ravel()
    rew = np.asarray(rewards, dtype=np.float64).ravel()
    prop = np.asarray(propensities, dtype=np.float64).ravel()
    if ctx.size == 0 or not (ctx.size == act.size == rew.size == prop.size):
        raise ModelInputError(
            "logs", "contexts, actions, rewards, propensities: equal, non-zero length"
        )
    if np.any((prop <= 0) | (prop > 1)):
        raise ModelInputError("propensities", "must be in (0, 1]")
    if np.any(ctx < 0) or np.any(act < 0):
        raise ModelInputError("logs", "contexts and actions must be non-negative indices")
    if not np.all(np.isfinite(rew)):
        raise ModelInputError("rewards", "must be finite")
    n_ctx = n_contexts or int(ctx.max()) + 1
    n_act = n_actions or int(act.max()) + 1
    if ctx.max() >= n_ctx or act.max() >= n_act:
        raise ModelInputError("logs", "an index exceeds n_contexts or n_actions")
    return BanditLog(
        contexts=ctx, actions=act, rewards=rew, propensities=prop, n_contexts=n_ctx, n_actions=n_act
    )
