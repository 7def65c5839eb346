"""The lift chart's geometry, computed here so the template only draws: per cycle the estimate
with its interval as an error bar, the simulator's true lift where there is one, and the zero
line (an interval that stays above it is a lift the holdout proves)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from workflows.campaign_loop import CycleSummary

# viewBox units; the SVG scales to its box, so on a phone one unit is about 0.7 px.
WIDTH, HEIGHT = 480, 240
LEFT, RIGHT, TOP, BOTTOM = 62, 12, 14, 34
# The latest cycles only: beyond this the bars would be thinner than a finger on a phone.
MAX_CYCLES = 40


@dataclass(frozen=True)
class ChartPoint:
    cycle: int
    x: float
    y: float
    low: float | None
    high: float | None
    true_y: float | None
    estimate: float
    ci_low: float | None
    ci_high: float | None
    true_lift: float | None


@dataclass(frozen=True)
class LiftChart:
    metric: str
    width: int
    height: int
    left: float
    right: float
    top: float
    bottom: float
    zero_y: float
    ticks: list[tuple[float, str]]
    points: list[ChartPoint]
    has_truth: bool


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _step(span: float) -> float:
    """A round tick step giving about four intervals over `span`."""
    raw = span / 4
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1.0, 2.0, 5.0, 10.0) if m * power >= raw)


def metrics_of(history: Sequence[CycleSummary]) -> list[str]:
    seen: dict[str, None] = {}
    for summary in history:
        seen.update(dict.fromkeys(summary.lifts))
    return list(seen)


def lift_chart(history: Sequence[CycleSummary], metric: str) -> LiftChart | None:
    """The chart of one metric over the cycles that measured it; None when none did."""
    rows = []
    for summary in history:
        lift = summary.lifts.get(metric)
        estimate = _finite(lift.estimate) if lift is not None else None
        if lift is None or estimate is None:
            continue
        truth = _finite((summary.true_lift or {}).get(metric))
        rows.append((summary.cycle, estimate, _finite(lift.ci_low), _finite(lift.ci_high), truth))
    if not rows:
        return None
    rows = rows[-MAX_CYCLES:]
    values = [0.0] + [v for row in rows for v in row[1:] if v is not None]
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        lo, hi = lo - 1.0, hi + 1.0
    step = _step(hi - lo)
    lo, hi = math.floor(lo / step) * step, math.ceil(hi / step) * step
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def y_of(v: float) -> float:
        return round(TOP + (hi - v) / (hi - lo) * plot_h, 2)

    ticks = []
    count = round((hi - lo) / step)
    for i in range(count + 1):
        value = lo + i * step
        ticks.append((y_of(value), f"{value:+.3g}" if abs(value) > step / 1e6 else "0"))
    slot = plot_w / len(rows)
    points = [
        ChartPoint(
            cycle=cycle,
            x=round(LEFT + (i + 0.5) * slot, 2),
            y=y_of(estimate),
            low=y_of(low) if low is not None else None,
            high=y_of(high) if high is not None else None,
            true_y=y_of(truth) if truth is not None else None,
            estimate=estimate,
            ci_low=low,
            ci_high=high,
            true_lift=truth,
        )
        for i, (cycle, estimate, low, high, truth) in enumerate(rows)
    ]
    return LiftChart(
        metric=metric,
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        right=WIDTH - RIGHT,
        top=TOP,
        bottom=HEIGHT - BOTTOM,
        zero_y=y_of(0.0),
        ticks=ticks,
        points=points,
        has_truth=any(p.true_lift is not None for p in points),
    )
