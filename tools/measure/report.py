"""Campaign report: PNG charts and one self-contained HTML page (images inlined as base64)."""

from __future__ import annotations

import base64
import html
from datetime import datetime
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field

from tools.allocator.curves import ResponseCurve
from tools.allocator.solver import AllocationResult
from tools.measure.decision import StopDecision
from tools.measure.errors import MeasureInputError

tracer = trace.get_tracer("liftloop.measure")


class LiftPoint(BaseModel):
    model_config = ConfigDict(frozen=True)
    cycle: int
    diff: float
    ci_low: float
    ci_high: float


class ArmCounts(BaseModel):
    model_config = ConfigDict(frozen=True)
    cycle: int
    counts: dict[str, int]


class ChannelCurve(BaseModel):
    model_config = ConfigDict(frozen=True)
    channel: str
    curve: ResponseCurve
    current_spend: float | None = None
    proposed_spend: float | None = None


class CampaignReportInput(BaseModel):
    model_config = ConfigDict(frozen=True)
    campaign_id: str = Field(min_length=1)
    title: str = ""
    metric: str = "contribution margin per profile"
    generated_at: datetime
    lift: list[LiftPoint] = Field(default_factory=list)
    arms: list[ArmCounts] = Field(default_factory=list)
    curves: list[ChannelCurve] = Field(default_factory=list)
    allocation: AllocationResult | None = None
    decision: StopDecision | None = None


class ReportFiles(BaseModel):
    model_config = ConfigDict(frozen=True)
    html: Path
    charts: list[Path]


def _lift_chart(points: list[LiftPoint], metric: str) -> Figure:
    fig = Figure(figsize=(7, 3.5))
    ax = fig.add_subplot()
    cycles = [p.cycle for p in points]
    ax.fill_between(
        cycles, [p.ci_low for p in points], [p.ci_high for p in points], alpha=0.25, label="CI"
    )
    ax.plot(cycles, [p.diff for p in points], marker="o", label="lift")
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("cycle")
    ax.set_ylabel(f"lift ({metric})")
    ax.set_title("Lift over holdout with interval")
    ax.legend(loc="best")
    return fig


def _arms_chart(arms: list[ArmCounts]) -> Figure:
    fig = Figure(figsize=(7, 3.5))
    ax = fig.add_subplot()
    names = sorted({a for snap in arms for a in snap.counts})
    cycles = [s.cycle for s in arms]
    totals = np.array([max(sum(s.counts.values()), 1) for s in arms], dtype=float)
    shares = np.array([[s.counts.get(n, 0) for s in arms] for n in names], dtype=float) / totals
    ax.stackplot(cycles, shares, labels=names)
    ax.set_ylim(0, 1)
    ax.set_xlabel("cycle")
    ax.set_ylabel("share of profiles")
    ax.set_title("Arm shares")
    ax.legend(loc="upper left", fontsize="small")
    return fig


def _curves_chart(curves: list[ChannelCurve]) -> Figure:
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    top = max(max(c.current_spend or 0.0, c.proposed_spend or 0.0, 1e-9) for c in curves)
    xs = np.linspace(0.0, 2.0 * top, 200)
    for c in curves:
        (line,) = ax.plot(xs, c.curve.value(xs), label=c.channel)
        for spend, marker in ((c.current_spend, "o"), (c.proposed_spend, "*")):
            if spend is not None:
                ax.plot([spend], c.curve.value([spend]), marker, color=line.get_color(), ms=9)
    ax.set_xlabel("spend per period")
    ax.set_ylabel("expected response")
    ax.set_title("Response curves (o current, * proposed)")
    ax.legend(loc="best", fontsize="small")
    return fig


def _allocation_chart(result: AllocationResult) -> Figure:
    fig = Figure(figsize=(7, 3.5))
    ax = fig.add_subplot()
    names = [a.name for a in result.allocations]
    x = np.arange(len(names))
    ax.bar(x - 0.2, [a.previous_spend for a in result.allocations], 0.4, label="before")
    ax.bar(x + 0.2, [a.spend for a in result.allocations], 0.4, label="after")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("spend")
    ax.set_title("Allocation before and after")
    ax.legend()
    fig.tight_layout()
    return fig


def write_campaign_report(report: CampaignReportInput, out_dir: Path) -> ReportFiles:
    """Write the charts that have data and an HTML page that embeds them."""
    with tracer.start_as_current_span("measure.write_campaign_report") as span:
        if out_dir.exists() and not out_dir.is_dir():
            raise MeasureInputError("out_dir", f"{out_dir} is not a directory")
        out_dir.mkdir(parents=True, exist_ok=True)
        figures: list[tuple[str, str, Figure]] = []
        if report.lift:
            figures.append(
                ("lift_over_time", "Lift over time", _lift_chart(report.lift, report.metric))
            )
        if report.arms:
            figures.append(("arm_shares", "Arm shares", _arms_chart(report.arms)))
        if report.curves:
            figures.append(("response_curves", "Response curves", _curves_chart(report.curves)))
        if report.allocation is not None:
            figures.append(("allocation", "Allocation", _allocation_chart(report.allocation)))
        charts, sections = [], []
        for stem, heading, fig in figures:
            path = out_dir / f"{stem}.png"
            fig.savefig(path, dpi=100)
            charts.append(path)
            encoded = base64.b64encode(path.read_bytes()).decode("ascii")
            sections.append(
                f"<h2>{html.escape(heading)}</h2>"
                f'<img alt="{html.escape(heading)}" src="data:image/png;base64,{encoded}">'
            )
        page = out_dir / "report.html"
        page.write_text(_page(report, sections), encoding="utf-8")
        span.set_attributes({"report.charts": len(charts)})
        return ReportFiles(html=page, charts=charts)


def _page(report: CampaignReportInput, sections: list[str]) -> str:
    esc = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{esc(report.title or report.campaign_id)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;"
        "padding:0 1rem}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:.25rem .5rem;text-align:right}img{max-width:100%}</style></head><body>",
        f"<h1>{esc(report.title or report.campaign_id)}</h1>",
        f"<p>Campaign <code>{esc(report.campaign_id)}</code>, generated "
        f"{esc(report.generated_at.isoformat())}.</p>",
    ]
    if report.decision is not None:
        d = report.decision
        parts.append(
            f"<p>StopDecision after cycle {d.cycle}: <strong>{esc(d.action)}</strong> "
            f"({esc(d.reason)}{': ' + esc(d.detail) if d.detail else ''}).</p>"
        )
    if report.lift:
        last = report.lift[-1]
        parts.append(
            f"<p>Latest lift in {esc(report.metric)}: {last.diff:.4g} "
            f"[{last.ci_low:.4g}, {last.ci_high:.4g}].</p>"
        )
    parts.extend(sections)
    if report.allocation is not None:
        a = report.allocation
        rows = "".join(
            f"<tr><th>{esc(x.name)}</th><td>{x.previous_spend:.2f}</td><td>{x.spend:.2f}</td>"
            f"<td>{x.marginal_roas:.3f}</td></tr>"
            for x in a.allocations
        )
        parts.append(
            "<table><tr><th>channel</th><th>before</th><th>after</th><th>marginal ROAS</th></tr>"
            f"{rows}</table><p>Shadow price of the budget: {a.budget_shadow_price:.4f}.</p>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)
