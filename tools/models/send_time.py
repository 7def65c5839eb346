"""Send-time optimisation: each person's engagement rate per hour of day, shrunk towards their
segment's rate by empirical Bayes (a beta-binomial prior whose strength is estimated from how
much people in the segment really differ), and the best allowed hour."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict

from tools.models.errors import ModelInputError

tracer = trace.get_tracer("liftloop.models")

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
HOURS = 24


class SendTimes(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    best_hour: IntArray  # (people,)
    rates: FloatArray  # (people, 24) shrunk engagement rate per hour
    prior_strength: FloatArray  # (segments,) pseudo-sends of the segment prior


def _prior_strength(opens: FloatArray, sends: FloatArray, segment_rate: FloatArray) -> float:
    """Method-of-moments beta-binomial strength over one segment's (person, hour) cells.

    For a cell with n sends around the segment's hour rate mu, E[n (rate - mu)^2] is
    mu (1 - mu) + n tau^2, where tau^2 is the real between-person variance; the prior's
    strength is then mu (1 - mu) / tau^2 - 1.
    """
    has = sends > 0
    if not has.any():
        return 1000.0
    n, k = sends[has], opens[has]
    mu = np.broadcast_to(segment_rate, sends.shape)[has]
    excess = np.sum(n * (k / n - mu) ** 2) - np.sum(mu * (1 - mu))
    tau2 = excess / n.sum()
    if tau2 <= 0:
        return 1000.0  # no real differences between people: lean fully on the segment
    m = float(np.average(mu, weights=n))
    return float(np.clip(m * (1 - m) / tau2 - 1.0, 1.0, 1000.0))


def send_times(
    person: npt.ArrayLike,
    hour: npt.ArrayLike,
    engaged: npt.ArrayLike,
    segment_of_person: npt.ArrayLike,
    *,
    allowed_hours: list[int] | None = None,
) -> SendTimes:
    """From sends (person index, hour sent, engaged 0/1) pick each person's best hour."""
    p = np.asarray(person).ravel().astype(np.int64)
    h = np.asarray(hour).ravel().astype(np.int64)
    e = np.asarray(engaged, dtype=np.float64).ravel()
    seg = np.asarray(segment_of_person).ravel().astype(np.int64)
    n_people = seg.size
    if not (p.size == h.size == e.size):
        raise ModelInputError("person", "person, hour and engaged must have equal length")
    if np.any((p < 0) | (p >= n_people)):
        raise ModelInputError("person", f"must index the {n_people} people of segment_of_person")
    if np.any((h < 0) | (h >= HOURS)):
        raise ModelInputError("hour", "must be in 0..23")
    if np.any((e < 0) | (e > 1)):
        raise ModelInputError("engaged", "must be 0 or 1")
    if np.any(seg < 0):
        raise ModelInputError("segment_of_person", "must be non-negative indices")
    allowed = np.zeros(HOURS, dtype=bool)
    allowed[allowed_hours if allowed_hours is not None else slice(None)] = True
    if not allowed.any():
        raise ModelInputError("allowed_hours", "must allow at least one hour")
    with tracer.start_as_current_span("models.send_time.fit") as span:
        cell = p * HOURS + h
        sends = np.bincount(cell, minlength=n_people * HOURS).reshape(n_people, HOURS)
        opens = np.bincount(cell, weights=e, minlength=n_people * HOURS).reshape(n_people, HOURS)
        n_seg = int(seg.max()) + 1 if n_people else 0
        seg_sends = np.zeros((n_seg, HOURS))
        seg_opens = np.zeros((n_seg, HOURS))
        np.add.at(seg_sends, seg, sends)
        np.add.at(seg_opens, seg, opens)
        overall = seg_opens.sum() / max(seg_sends.sum(), 1.0)
        # The segment's hour curve is itself shrunk towards the overall rate so empty hours work.
        seg_rate = (seg_opens + 10.0 * overall) / (seg_sends + 10.0)
        strength = np.array(
            [_prior_strength(opens[seg == s], sends[seg == s], seg_rate[s]) for s in range(n_seg)]
        )
        k = strength[seg][:, None]
        rates = (opens + k * seg_rate[seg]) / (sends + k)
        best = np.where(allowed[None, :], rates, -np.inf).argmax(axis=1).astype(np.int64)
        span.set_attribute("models.people", n_people)
        span.set_attribute("models.sends", int(p.size))
        span.set_attribute("models.segments", n_seg)
        return SendTimes(best_hour=best, rates=rates, prior_strength=strength)


def hour_response(times: SendTimes, hours: list[int]) -> FloatArray:
    """Multiplier on uplift for each candidate send hour (rate relative to the person's mean
    over those hours), the `hour_response` input of the next-best-action scorer."""
    cols = times.rates[:, hours]
    mean = cols.mean(axis=1, keepdims=True)
    out: FloatArray = np.divide(cols, mean, out=np.ones_like(cols), where=mean > 0)
    return out
