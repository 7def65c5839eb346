"""Plays the customers after a send: who converts, for how much, and when, drawn from the
simulator's known truth, and the true effect to compare the measured lift with."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict

from tools.simulation import truth


class SimOffer(BaseModel):
    model_config = ConfigDict(frozen=True)

    discount_pct: float
    margin_pct: float


class Decided(NamedTuple):
    """One person of a cycle as the loop decided and sent (a tuple: cycles hold millions)."""

    profile_id: str
    segment: str
    holdout: bool
    offer_id: str
    channel: str
    sent: bool


@dataclass(frozen=True)
class Playback:
    # order_completed events, ready for the CDP's events table.
    events: list[dict[str, Any]]
    # The mean true effect over everyone the policy decided for, per metric.
    true_lift: dict[str, float]


def play(
    people: Sequence[Decided],
    offers: Mapping[str, SimOffer],
    *,
    rng: np.random.Generator,
    window_from: datetime,
    window_s: float,
    message_prefix: str,
) -> Playback:
    """Conversions within the first 90 % of the attribution window; margins from the offer's
    terms for the sent, from the offers' mean margin for everyone else."""
    n = len(people)
    base_margin = float(np.mean([o.margin_pct for o in offers.values()]))
    segs = np.array([p.segment for p in people], dtype=object).astype(str)
    treated = np.array([p.sent for p in people])
    p = truth.control_conversion(segs)
    basket = truth.basket(segs, treated=False)
    margin_pct = np.full(n, base_margin)
    discount = np.zeros(n)
    effect_conv = np.zeros(n)
    effect_margin = np.zeros(n)
    for (offer_id, channel), idx in _groups(people, treated).items():
        o = offers[offer_id]
        s = segs[idx]
        p1 = truth.treated_conversion(s, channel, o.discount_pct)
        effect_conv[idx] = p1 - p[idx]
        effect_margin[idx] = truth.expected_margin(
            s,
            treated=True,
            channel=channel,
            discount_pct=o.discount_pct,
            margin_pct=o.margin_pct,
        ) - truth.expected_margin(s, treated=False, margin_pct=base_margin)
        p[idx], basket[idx] = p1, truth.basket(s, treated=True)
        margin_pct[idx], discount[idx] = o.margin_pct, o.discount_pct
    converted = rng.random(n) < p
    # Baskets vary around the segment mean (gamma with shape 2 keeps the mean).
    gross = rng.gamma(2.0, basket / 2.0)
    offsets = rng.random(n) * window_s * 0.9
    events = [
        {
            "message_id": f"{message_prefix}:{people[int(i)].profile_id}",
            "profile_id": people[int(i)].profile_id,
            "name": "order_completed",
            "occurred_at": window_from + timedelta(seconds=float(offsets[i])),
            "properties": {
                "revenue": round(float(gross[i] * (1 - discount[i] / 100)), 2),
                "margin": round(float(gross[i] * (margin_pct[i] - discount[i]) / 100), 4),
                "discount_pct": float(discount[i]),
                "simulated": True,
            },
        }
        for i in np.flatnonzero(converted)
    ]
    # The measure stage compares everyone the policy decided for (sent or not) with the
    # holdout, so the truth to compare with is the mean effect over that same group.
    policy_group = ~np.array([p.holdout for p in people], dtype=bool)
    true_lift = {
        "conversion": float(effect_conv[policy_group].mean()) if policy_group.any() else 0.0,
        "contribution_margin": float(effect_margin[policy_group].mean())
        if policy_group.any()
        else 0.0,
    }
    return Playback(events=events, true_lift=true_lift)


def _groups(people: Sequence[Decided], treated: np.ndarray) -> dict[tuple[str, str], np.ndarray]:
    groups: dict[tuple[str, str], list[int]] = {}
    for i in map(int, np.flatnonzero(treated)):
        groups.setdefault((people[i].offer_id, people[i].channel), []).append(i)
    return {k: np.array(v) for k, v in groups.items()}
