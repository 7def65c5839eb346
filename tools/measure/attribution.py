"""Multi-touch attribution over aggregated journeys: Markov removal effect, Shapley, heuristics.

These split observed conversions between touchpoints; they are not causal lift. The loop
proves incrementality with holdouts; attribution is for reading journeys.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field

from tools.measure.errors import MeasureInputError

tracer = trace.get_tracer("liftloop.measure")

AttributionModel = Literal["markov", "shapley", "first", "last", "linear", "time_decay"]
MAX_SHAPLEY_CHANNELS = 20


class Journey(BaseModel):
    """One distinct path with how often it converted and how often it did not."""

    model_config = ConfigDict(frozen=True)
    touches: list[str] = Field(min_length=1)
    conversions: float = Field(ge=0.0)
    value: float = Field(default=0.0, ge=0.0)
    nulls: float = Field(default=0.0, ge=0.0)


class ChannelCredit(BaseModel):
    model_config = ConfigDict(frozen=True)
    channel: str
    conversions: float
    value: float


class AttributionResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    model: AttributionModel
    channels: list[ChannelCredit]
    total_conversions: float
    total_value: float
    # Markov only: 1 − P(conversion without the channel) / P(conversion).
    removal_effects: dict[str, float] | None = None
    conversion_probability: float | None = None


def read_journeys(
    path: Path,
    *,
    delimiter: str = ";",
    path_column: str = "path",
    conversions_column: str = "total_conversions",
    value_column: str | None = "total_conversion_value",
    null_column: str | None = "total_null",
    touch_separator: str = ">",
) -> list[Journey]:
    """Read aggregated journeys (ChannelAttribution's layout by default)."""
    if not path.is_file():
        raise MeasureInputError("paths", f"file not found: {path}")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        header = reader.fieldnames or []
        for col in (path_column, conversions_column, value_column, null_column):
            if col is not None and col not in header:
                raise MeasureInputError("paths", f"unknown column {col!r}; columns are {header}")
        journeys = []
        for line, row in enumerate(reader, start=2):
            touches = [t.strip() for t in row[path_column].split(touch_separator) if t.strip()]
            if not touches:
                raise MeasureInputError("paths", f"line {line}: empty path")
            try:
                journeys.append(
                    Journey(
                        touches=touches,
                        conversions=float(row[conversions_column]),
                        value=float(row[value_column]) if value_column else 0.0,
                        nulls=float(row[null_column]) if null_column else 0.0,
                    )
                )
            except ValueError as exc:
                raise MeasureInputError("paths", f"line {line}: {exc}") from None
    if not journeys:
        raise MeasureInputError("paths", "no journeys in the file")
    return journeys


def attribute(
    journeys: Sequence[Journey], model: AttributionModel, *, half_life: float = 2.0
) -> AttributionResult:
    """Credit conversions and value to channels with the chosen model."""
    with tracer.start_as_current_span("measure.attribute") as span:
        if not journeys:
            raise MeasureInputError("journeys", "need at least one journey")
        if half_life <= 0:
            raise MeasureInputError("half_life", "must be positive")
        channels = sorted({t for j in journeys for t in j.touches})
        total_conv = float(sum(j.conversions for j in journeys))
        total_value = float(sum(j.value for j in journeys))
        removal: dict[str, float] | None = None
        probability: float | None = None
        if model == "markov":
            conv, value, removal, probability = _markov(journeys, channels)
        elif model == "shapley":
            conv, value = _shapley(journeys, channels)
        else:
            conv, value = _heuristic(journeys, channels, model, half_life)
        span.set_attributes(
            {
                "attribution.model": model,
                "attribution.channels": len(channels),
                "attribution.journeys": len(journeys),
            }
        )
        return AttributionResult(
            model=model,
            channels=[
                ChannelCredit(channel=c, conversions=float(conv[i]), value=float(value[i]))
                for i, c in enumerate(channels)
            ],
            total_conversions=total_conv,
            total_value=total_value,
            removal_effects=removal,
            conversion_probability=probability,
        )


def _heuristic(
    journeys: Sequence[Journey], channels: list[str], model: str, half_life: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    index = {c: i for i, c in enumerate(channels)}
    conv = np.zeros(len(channels))
    value = np.zeros(len(channels))
    for j in journeys:
        n = len(j.touches)
        if model == "first":
            weights = np.zeros(n)
            weights[0] = 1.0
        elif model == "last":
            weights = np.zeros(n)
            weights[-1] = 1.0
        elif model == "linear":
            weights = np.full(n, 1.0 / n)
        else:
            # Touches closer to the conversion count more; halves every `half_life` touches.
            weights = 2.0 ** (-(n - 1 - np.arange(n)) / half_life)
            weights /= weights.sum()
        for touch, w in zip(j.touches, weights, strict=True):
            conv[index[touch]] += w * j.conversions
            value[index[touch]] += w * j.value
    return conv, value


def _markov(
    journeys: Sequence[Journey], channels: list[str]
) -> tuple[NDArray[np.float64], NDArray[np.float64], dict[str, float], float]:
    """First-order chain with start, conversion and null states; exact absorption, no simulation."""
    k = len(channels)
    index = {c: i + 1 for i, c in enumerate(channels)}  # 0 = start
    conv_state, null_state = k + 1, k + 2
    counts = np.zeros((k + 1, k + 3))
    for j in journeys:
        weight = j.conversions + j.nulls
        if weight == 0:
            continue
        states = [0] + [index[t] for t in j.touches]
        np.add.at(counts, (states[:-1], states[1:]), weight)
        counts[states[-1], conv_state] += j.conversions
        counts[states[-1], null_state] += j.nulls
    rows = counts.sum(axis=1, keepdims=True)
    if rows[0, 0] == 0:
        raise MeasureInputError("journeys", "no journey has conversions or nulls")
    transition = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    # Transient states are start and channels; a channel with no outgoing data ends in null.
    q = transition[:, : k + 1]
    r = transition[:, conv_state].copy()

    def p_convert(removed: int | None) -> float:
        qq, rr = q.copy(), r.copy()
        if removed is not None:
            qq[:, removed] = 0.0  # moving into the removed channel now ends the journey (null)
            qq[removed, :] = 0.0
            rr[removed] = 0.0
        absorb = np.linalg.solve(np.eye(k + 1) - qq, rr)
        return float(absorb[0])

    base = p_convert(None)
    if base <= 0:
        raise MeasureInputError("journeys", "no conversions to attribute")
    effects = np.array([1.0 - p_convert(index[c]) / base for c in channels])
    shares = effects / effects.sum()
    total_conv = sum(j.conversions for j in journeys)
    total_value = sum(j.value for j in journeys)
    removal = {c: float(e) for c, e in zip(channels, effects, strict=True)}
    return shares * total_conv, shares * total_value, removal, base


def _shapley(
    journeys: Sequence[Journey], channels: list[str]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Exact Shapley values of v(S) = conversions of journeys whose channels all lie in S.

    Computed over every coalition: subset sums give v, then each channel's weighted marginal
    contributions (Zhao et al. 2018, "Shapley value methods for attribution modeling").
    """
    k = len(channels)
    if k > MAX_SHAPLEY_CHANNELS:
        raise MeasureInputError(
            "journeys", f"{k} channels; exact Shapley is limited to {MAX_SHAPLEY_CHANNELS}"
        )
    index = {c: i for i, c in enumerate(channels)}
    size = 1 << k
    results = []
    for attr in ("conversions", "value"):
        worth = np.zeros(size)
        for j in journeys:
            mask = 0
            for t in j.touches:
                mask |= 1 << index[t]
            worth[mask] += getattr(j, attr)
        # Zeta transform: v(S) = Σ_{T ⊆ S} worth(T).
        for bit in range(k):
            step = 1 << bit
            blocks = worth.reshape(-1, 2 * step)
            blocks[:, step:] += blocks[:, :step]
        results.append(_shapley_from_v(worth, k))
    return results[0], results[1]


def _shapley_from_v(v: NDArray[np.float64], k: int) -> NDArray[np.float64]:
    masks = np.arange(1 << k)
    popcount = np.array([bin(m).count("1") for m in masks])
    weight_by_size = np.array(
        [math.factorial(s) * math.factorial(k - s - 1) / math.factorial(k) for s in range(k)]
    )
    phi = np.zeros(k)
    for c in range(k):
        bit = 1 << c
        without = masks[(masks & bit) == 0]
        phi[c] = (weight_by_size[popcount[without]] * (v[without | bit] - v[without])).sum()
    return phi
