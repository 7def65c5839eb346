from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from tools.allocator.curves import ResponseCurve
from tools.allocator.solver import AllocationRequest, ChannelSpec, allocate
from tools.measure.decision import StopDecision
from tools.measure.report import (
    ArmCounts,
    CampaignReportInput,
    ChannelCurve,
    LiftPoint,
    write_campaign_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_report_writes_charts_and_self_contained_html(tmp_path: Path) -> None:
    search = ResponseCurve(kind="hill", beta=100, half_saturation=20, shape=1)
    social = ResponseCurve(kind="logistic", beta=80, lam=0.05)
    allocation = allocate(
        AllocationRequest(
            channels=[
                ChannelSpec(name="search", curve=search, current_spend=30),
                ChannelSpec(name="social", curve=social, current_spend=30),
            ],
            budget=60,
        )
    )
    report = CampaignReportInput(
        campaign_id="winback-<de>",
        generated_at=datetime(2026, 11, 28, tzinfo=UTC),
        lift=[
            LiftPoint(cycle=c, diff=0.1 * c, ci_low=0.1 * c - 0.3, ci_high=0.1 * c + 0.3)
            for c in range(1, 5)
        ],
        arms=[
            ArmCounts(cycle=c, counts={"holdout": 100, "ten_off": 400 + 50 * c, "none": 500})
            for c in range(1, 5)
        ],
        curves=[
            ChannelCurve(
                channel="search",
                curve=search,
                current_spend=30,
                proposed_spend=allocation.spend_of("search"),
            ),
            ChannelCurve(
                channel="social",
                curve=social,
                current_spend=30,
                proposed_spend=allocation.spend_of("social"),
            ),
        ],
        allocation=allocation,
        decision=StopDecision(action="continue", reason="not_yet_conclusive", cycle=4),
    )
    files = write_campaign_report(report, tmp_path / "out")
    assert [p.name for p in files.charts] == [
        "lift_over_time.png",
        "arm_shares.png",
        "response_curves.png",
        "allocation.png",
    ]
    for chart in files.charts:
        assert chart.read_bytes()[:8] == PNG_MAGIC
    page = files.html.read_text()
    assert page.count("data:image/png;base64,") == 4
    assert "winback-&lt;de&gt;" in page  # escaped, not raw markup
    assert 'src="http' not in page and "<script" not in page
    assert "not_yet_conclusive" in page


def test_report_with_only_lift(tmp_path: Path) -> None:
    report = CampaignReportInput(
        campaign_id="c",
        generated_at=datetime(2026, 11, 28, tzinfo=UTC),
        lift=[LiftPoint(cycle=1, diff=1.0, ci_low=0.5, ci_high=1.5)],
    )
    files = write_campaign_report(report, tmp_path)
    assert [p.name for p in files.charts] == ["lift_over_time.png"]
