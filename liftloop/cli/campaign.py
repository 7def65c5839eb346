"""`liftloop campaign start|list|status|decisions|report|pause|resume|stop`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from liftloop import runtime
from liftloop.cli import client, output
from liftloop.cli.output import JsonOption
from liftloop.settings import get_settings

if TYPE_CHECKING:  # commands import Temporal's side when they run, not when the CLI loads
    from workflows.campaign_loop import CampaignStatus

app = typer.Typer(name="campaign", help="Start and control campaigns.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    """Add the `campaign` group to `root`."""
    root.add_typer(app)


CampaignId = Annotated[str, typer.Argument(help="The campaign's id.")]


@app.command("start")
def campaign_start(
    spec_file: Annotated[Path, typer.Argument(help="YAML campaign spec.", dir_okay=False)],
    as_json: JsonOption = False,
) -> None:
    """Start a campaign from a YAML spec."""
    from liftloop.audit import audit_log
    from liftloop.campaigns import start_campaign
    from liftloop.loop.spec import SpecError, load_spec
    from liftloop.telemetry import flush_tracing, setup_tracing

    settings = get_settings()
    try:
        spec = load_spec(spec_file)
    except SpecError as exc:
        problems = [r if f == spec_file.name else f"{f}: {r}" for f, r in exc.problems]
        output.fail(f"invalid spec {spec_file.name}", "; ".join(problems), as_json=as_json)
    except OSError as exc:
        output.fail(spec_file.name, f"cannot be read ({exc.strerror})", as_json=as_json)

    async def main() -> Any:
        from temporalio.exceptions import WorkflowAlreadyStartedError

        temporal = await client.connect(settings, as_json=as_json)
        try:
            return await start_campaign(
                temporal, settings, spec, audit=audit_log(settings), actor=client.actor(settings)
            )
        except WorkflowAlreadyStartedError:
            output.fail("id", f"campaign {spec.id} is already running", as_json=as_json)
        except SpecError as exc:
            output.fail("spec", str(exc), as_json=as_json)
        except ValueError as exc:
            output.fail("settings", str(exc).removeprefix("settings: "), as_json=as_json)

    # The start is the root of the campaign's first trace: with no tracer in this process,
    # nothing would carry a trace to the workflow, and each of its stages would be a trace alone.
    setup_tracing(settings, "cli")
    try:
        started = client.run(main)
    finally:
        flush_tracing()
    output.emit(
        started.model_dump(),
        as_json=as_json,
        human=f"started {started.campaign_id} as workflow {started.workflow_id}\n"
        + runtime.ui_url(settings, started.workflow_id)
        + (f"\ntrace of its first cycle: {started.trace_id}" if started.trace_id else ""),
    )


@app.command("status")
def campaign_status_cmd(campaign_id: CampaignId, as_json: JsonOption = False) -> None:
    """Show a campaign's cycle, stage, pending approvals and results."""
    from liftloop.campaigns import CampaignNotFound, campaign_status

    settings = get_settings()

    async def main() -> Any:
        temporal = await client.connect(settings, as_json=as_json)
        try:
            return await campaign_status(temporal, campaign_id)
        except CampaignNotFound as exc:
            output.fail_on(exc, as_json=as_json)

    st = client.run(main)
    output.emit(st.model_dump(mode="json"), as_json=as_json, human="\n".join(status_lines(st)))


NO_VALUE = "—"


def _signed(value: float | None) -> str:
    return NO_VALUE if value is None else f"{value:+.5f}"


def status_lines(st: CampaignStatus) -> list[str]:
    """The human form of `campaign status`: the campaign, then its pending approvals and each
    measured cycle's lift on its first metric."""
    lines = [
        f"{st.campaign_id}: cycle {st.cycle}, stage {st.stage}, outcome {st.outcome}"
        f"{', paused' if st.paused else ''}"
    ]
    if st.reason:
        lines.append(f"  reason: {st.reason}")
    lines += [
        f"  approval pending {p.request_id}: {'; '.join(p.reasons)}" for p in st.pending_approvals
    ]
    for c in st.history:
        line = f"  cycle {c.cycle}: sent {c.sent}, held out {c.held_out}"
        lift = next(iter(c.lifts.values()), None)
        # A cycle stopped early, or with fewer than two people in a group, has no interval
        # (`ci_low`/`ci_high` None) and may have no lift at all.
        if lift is None:
            line += f", lift {NO_VALUE}"
        else:
            line += (
                f", {lift.metric} lift {_signed(lift.estimate)}"
                f" [{_signed(lift.ci_low)}, {_signed(lift.ci_high)}]"
            )
        lines.append(line)
    return lines


@app.command("list")
def campaign_list(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """List campaigns, newest first, with their outcome (and why one failed or was stopped)."""
    from liftloop.campaigns import list_campaigns

    settings = get_settings()

    async def main() -> Any:
        return await list_campaigns(await client.connect(settings, as_json=as_json), limit)

    campaigns = client.run(main)
    rows = [(c.campaign_id, c.outcome, c.reason or "") for c in campaigns]
    output.emit(
        {"campaigns": [c.model_dump(mode="json") for c in campaigns]},
        as_json=as_json,
        human=output.table("campaign", "outcome", "reason", rows=rows),
    )


@app.command("decisions")
def campaign_decisions(
    campaign_id: CampaignId,
    out_file: Annotated[
        Path,
        typer.Option("--out", help="JSON Lines file to write, one round per line.", dir_okay=False),
    ],
    as_json: JsonOption = False,
) -> None:
    """Export the campaign's measured decisions as bandit feedback for `liftloop ope --logs`."""
    from liftloop.db import engine_for
    from liftloop.loop.decision_log import export_bandit_log

    export = export_bandit_log(engine_for(get_settings().cdp_url), campaign_id)
    if not export.rounds:
        output.fail("campaign_id", f"{campaign_id}: no measured decisions", as_json=as_json)
    try:
        with out_file.open("w", encoding="utf-8") as handle:
            for r in export.rounds:
                handle.write(r.model_dump_json() + "\n")
    except OSError as exc:
        output.fail("--out", f"{out_file}: cannot be written ({exc.strerror})", as_json=as_json)
    summary = {
        "rounds": len(export.rounds),
        "unmeasured": export.unmeasured,
        "segments": export.segments,
        "arms": export.arms,
        "file": str(out_file),
    }
    output.emit(
        summary,
        as_json=as_json,
        human=f"{len(export.rounds)} rounds written to {out_file} ({export.unmeasured} not yet "
        f"measured); actions: {', '.join(f'{i}={a}' for i, a in enumerate(export.arms))}",
    )


@app.command("fairness")
def campaign_fairness(campaign_id: CampaignId, as_json: JsonOption = False) -> None:
    """Each measured cycle's treatment, discount, suppression and holdout rates across the
    groups of each attribute, the disparity ratio (lowest over highest) and whether it was
    flagged (which escalates the next cycle's variants to approval)."""
    from liftloop.db import engine_for
    from liftloop.loop.fairness import checks_of

    checks = checks_of(engine_for(get_settings().cdp_url), campaign_id)
    if not checks:
        output.fail("campaign_id", f"{campaign_id}: no fairness checks", as_json=as_json)
    rows = [
        (
            c.cycle,
            c.attribute,
            c.metric,
            f"{c.ratio:.3f}",
            f"{c.z:.1f}",
            f"{c.lowest} / {c.highest}",
            "FLAGGED" if c.flagged else "",
        )
        for c in checks
    ]
    output.emit(
        {"campaign_id": campaign_id, "checks": [c.model_dump() for c in checks]},
        as_json=as_json,
        human=output.table(
            "cycle", "attribute", "rate", "ratio", "z", "lowest / highest", "", rows=rows
        ),
    )


@app.command("costs")
def campaign_costs(campaign_id: CampaignId, as_json: JsonOption = False) -> None:
    """Model tokens and cost of a campaign per cycle, job (generate, plan, eval), channel and
    model, from the ledger in the CDP database."""
    from liftloop.db import engine_for
    from tools.content.ledger import SqlCostLedger

    costs = SqlCostLedger(engine_for(get_settings().cdp_url)).costs(campaign_id)
    if not costs.lines:
        output.fail("campaign_id", f"{campaign_id}: no model usage recorded", as_json=as_json)
    rows = [
        (
            "" if line.cycle is None else line.cycle,
            line.job,
            line.channel,
            line.model,
            line.requests,
            line.cached_responses,
            f"{line.input_tokens}/{line.output_tokens}",
            f"{line.cost_eur:.4f}",
        )
        for line in costs.lines
    ]
    total = f"total: {costs.requests} requests, {costs.input_tokens} input and"
    total += f" {costs.output_tokens} output tokens, EUR {costs.cost_eur:.6f}"
    output.emit(
        costs.model_dump(mode="json"),
        as_json=as_json,
        human=output.table(
            "cycle",
            "job",
            "channel",
            "model",
            "calls",
            "cached",
            "tokens in/out",
            "EUR",
            rows=rows,
            title=total,
        ),
    )


@app.command("report")
def campaign_report(
    campaign_id: CampaignId,
    out_dir: Annotated[
        Path,
        typer.Option("--out", help="Folder for report.html and its PNG charts.", file_okay=False),
    ],
    as_json: JsonOption = False,
) -> None:
    """Write the campaign's report from its measured cycles: lift with its always-valid
    interval after each cycle, arm shares, the stop rule's verdict (one HTML page, PNG charts)."""
    from liftloop.db import engine_for
    from liftloop.report import campaign_report_input
    from tools.measure.errors import MeasureInputError
    from tools.measure.report import write_campaign_report

    report = campaign_report_input(engine_for(get_settings().cdp_url), campaign_id)
    if report is None:
        output.fail("campaign_id", f"{campaign_id}: no measured cycles", as_json=as_json)
    try:
        files = write_campaign_report(report, out_dir)
    except MeasureInputError as exc:
        output.fail("--out", exc.reason, as_json=as_json)
    except OSError as exc:
        output.fail("--out", f"{out_dir}: cannot be written ({exc.strerror})", as_json=as_json)
    decision = report.decision.model_dump() if report.decision else None
    output.emit(
        {
            "campaign_id": campaign_id,
            "cycles": [a.cycle for a in report.arms],
            "metric": report.metric,
            "lift": [p.model_dump() for p in report.lift],
            "arms": [a.model_dump() for a in report.arms],
            "decision": decision,
            "html": str(files.html),
            "charts": [str(c) for c in files.charts],
        },
        as_json=as_json,
        human=f"{files.html} ({len(files.charts)} charts, {len(report.arms)} cycles)"
        + (
            f"; after cycle {decision['cycle']}: {decision['action']} ({decision['reason']})"
            if decision
            else ""
        ),
    )


def _control(campaign_id: str, action: Literal["pause", "resume", "stop"]) -> None:
    from liftloop.audit import audit_log
    from liftloop.campaigns import CampaignEnded, CampaignNotFound, control_campaign

    settings = get_settings()

    async def main() -> Any:
        temporal = await client.connect(settings)
        try:
            return await control_campaign(
                temporal,
                campaign_id,
                action,
                audit=audit_log(settings),
                actor=client.actor(settings),
            )
        except (CampaignNotFound, CampaignEnded) as exc:
            output.fail_on(exc)

    result = client.run(main)
    output.show(
        f"{action}: {result.effect} {campaign_id}"
        + (f" ({result.reason})" if result.reason else "")
    )


@app.command("pause")
def campaign_pause(campaign_id: CampaignId) -> None:
    """Pause before the next stage."""
    _control(campaign_id, "pause")


@app.command("resume")
def campaign_resume(campaign_id: CampaignId) -> None:
    """Resume a paused campaign."""
    _control(campaign_id, "resume")


@app.command("stop")
def campaign_stop(campaign_id: CampaignId) -> None:
    """Stop after the current stage; what was sent is still measured."""
    _control(campaign_id, "stop")
