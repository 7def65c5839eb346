"""The lift chart's geometry and the page formatting: intervals drawn where their values are,
the zero line inside the plot, slots marked in escaped copy, deadlines as time left, audit
details inline unless long."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from liftloop.web.audit_page import detail_rows
from liftloop.web.chart import HEIGHT, MAX_CYCLES, lift_chart, metrics_of
from liftloop.web.formatting import until, with_slots
from tools.measure.lift import LiftEstimate
from workflows.campaign_loop import CycleSummary


def _cycle(n: int, estimate: float, low: float | None, high: float | None) -> CycleSummary:
    lift = LiftEstimate(
        metric="conversion",
        treated_n=100,
        control_n=10,
        treated_mean=0.1,
        control_mean=0.1 - estimate,
        estimate=estimate,
        ci_low=low,
        ci_high=high,
        p_value=None,
    )
    return CycleSummary(
        cycle=n,
        audience=110,
        sent=100,
        failed=0,
        suppressed=0,
        held_out=10,
        approvals_requested=0,
        approvals_approved=0,
        lifts={"conversion": lift},
        true_lift={"conversion": 0.02},
    )


def test_the_chart_puts_each_interval_around_its_estimate_and_zero_inside() -> None:
    history = [
        _cycle(1, 0.01, -0.02, 0.04),
        _cycle(2, 0.03, 0.01, 0.05),
        _cycle(3, 0.02, None, None),
    ]
    assert metrics_of(history) == ["conversion"]
    chart = lift_chart(history, "conversion")
    assert chart is not None and chart.has_truth
    assert chart.top <= chart.zero_y <= chart.bottom <= HEIGHT
    first, second, third = chart.points
    assert first.x < second.x < third.x
    # SVG's y grows downwards: the high end of an interval is drawn above its estimate.
    assert first.high is not None and first.low is not None
    assert first.high < first.y < first.low
    assert second.low is not None and second.low < chart.zero_y  # above zero: proven lift
    assert third.low is None and third.high is None  # no interval, no bar
    assert [label for _, label in chart.ticks].count("0") == 1
    assert lift_chart(history, "contribution_margin") is None


def test_a_long_campaign_shows_its_latest_cycles() -> None:
    history = [_cycle(n, 0.0, 0.0, 0.0) for n in range(1, MAX_CYCLES + 11)]
    chart = lift_chart(history, "conversion")
    assert chart is not None and len(chart.points) == MAX_CYCLES
    assert chart.points[0].cycle == 11


def test_slots_are_marked_and_the_rest_is_escaped() -> None:
    html = str(with_slots("<b>{first_name}</b> & {{ cta_url }}"))
    assert html == (
        '&lt;b&gt;<span class="slot" title="filled per person at send time">{first_name}</span>'
        '&lt;/b&gt; &amp; <span class="slot" title="filled per person at send time">'
        "{{ cta_url }}</span>"
    )


def test_deadlines_read_as_time_left() -> None:
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    assert until(now + timedelta(hours=3, minutes=59, seconds=30), now) == "in 3 h 59 min"
    assert until(now + timedelta(days=2, hours=1), now) == "in 2 d 1 h"
    assert until(now - timedelta(minutes=2), now) == "passed 2 min ago"
    assert until(None, now) == "no deadline"


def test_audit_details_read_inline_unless_long() -> None:
    rows = detail_rows(
        {
            "rule_ids": ["campaign.max_discount", "tone.pressure"],
            "providers": {"email": "smtp"},
            "spec": {"id": "x", "offers": [{"id": "o", "discount_pct": 20}] * 5},
            "sent": 72,
        }
    )
    assert rows[0] == ("providers", '{"email": "smtp"}', False)
    assert rows[1] == ("rule_ids", "campaign.max_discount, tone.pressure", False)
    assert rows[2] == ("sent", "72", False)
    key, text, folded = rows[3]
    assert key == "spec" and folded and "\n" in text
