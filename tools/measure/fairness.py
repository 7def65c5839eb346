"""Treatment, offer and delivery rates across groups of people, and their disparity ratios.

For each attribute (segment, country, language, an age band...) and each group of it with at
least `min_group` people decided for, four rates: treatment (got a message, among those outside
the holdout), the mean discount offered to the treated, delivery (the share of the treated whose
message was not held back at send time by consent, caps or quiet hours) and the holdout rate
over everyone. Each is a rate of a favourable outcome, so the disparity ratio is the lowest
group's over the highest's: 1 is equal, and the "four-fifths rule" flags below 0.8.

A ratio is flagged only when the gap is also beyond noise: the difference between the lowest
and the highest group is more than `min_z` standard errors (a Welch z). Small groups and rare
outcomes otherwise flag at random. The holdout ratio checks the randomisation itself and is
never flagged: the holdout is drawn by hash, so a skew there is noise or a bug, not a policy.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping

from pydantic import BaseModel, ConfigDict

METRICS = ("treatment", "discount", "delivery", "holdout")


class Person(BaseModel):
    """One decision, with the person's groups."""

    model_config = ConfigDict(frozen=True)

    groups: Mapping[str, str]
    holdout: bool
    treated: bool
    discount_pct: float
    suppressed: bool


class Disparity(BaseModel):
    attribute: str
    metric: str
    rates: dict[str, float]
    lowest: str
    highest: str
    ratio: float
    z: float
    flagged: bool


def _values(people: list[Person]) -> dict[str, list[float]]:
    inside = [p for p in people if not p.holdout]
    treated = [p for p in inside if p.treated]
    return {
        "treatment": [float(p.treated) for p in inside],
        "discount": [p.discount_pct for p in treated],
        "delivery": [float(not p.suppressed) for p in treated],
        "holdout": [float(p.holdout) for p in people],
    }


def _mean_var(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return mean, var


def _z(low: list[float], high: list[float]) -> float:
    (m_lo, v_lo), (m_hi, v_hi) = _mean_var(low), _mean_var(high)
    se = math.sqrt(v_lo / len(low) + v_hi / len(high))
    if se == 0:
        return math.inf if m_hi > m_lo else 0.0
    return (m_hi - m_lo) / se


def disparities(
    people: Iterable[Person],
    *,
    min_ratio: float = 0.8,
    min_group: int = 100,
    min_z: float = 3.0,
) -> list[Disparity]:
    """One entry per (attribute, metric) with at least two groups of `min_group` people."""
    by_group: dict[str, dict[str, list[Person]]] = defaultdict(lambda: defaultdict(list))
    for p in people:
        for attribute, value in p.groups.items():
            by_group[attribute][value].append(p)
    found = []
    for attribute, groups in sorted(by_group.items()):
        values = {g: _values(m) for g, m in groups.items() if len(m) >= min_group}
        for metric in METRICS:
            samples = {g: v[metric] for g, v in values.items() if v[metric]}
            if len(samples) < 2:
                continue
            rates = {g: _mean_var(s)[0] for g, s in samples.items()}
            lowest = min(rates, key=rates.__getitem__)
            highest = max(rates, key=rates.__getitem__)
            ratio = rates[lowest] / rates[highest] if rates[highest] > 0 else 1.0
            z = _z(samples[lowest], samples[highest])
            found.append(
                Disparity(
                    attribute=attribute,
                    metric=metric,
                    rates={g: round(r, 6) for g, r in sorted(rates.items())},
                    lowest=lowest,
                    highest=highest,
                    ratio=round(ratio, 6),
                    z=round(z, 3) if math.isfinite(z) else 1e9,
                    flagged=metric != "holdout" and ratio < min_ratio and z > min_z,
                )
            )
    return found
