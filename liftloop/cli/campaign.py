"""`liftloop campaign start|status|decisions|pause|resume|stop`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from liftloop import runtime
from liftloop.cli import client, output
from liftloop.cli.output import JsonOption
from liftloop.settings import get_settings

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
    from liftloop.campaigns import start_campaign
    from liftloop.loop.spec import SpecError, load_spec

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
            return await start_campaign(temporal, settings, spec)
        except WorkflowAlreadyStartedError:
            output.fail("id", f"campaign {spec.id} is already running", as_json=as_json)

    started = client.run(main)
    output.emit(
        started.model_dump(),
        as_json=as_json,
        human=f"started {started.campaign_id} as workflow {started.workflow_id}\n"
        + runtime.ui_url(settings, started.workflow_id),
    )


@app.command("status")
def campaign_status_cmd(campaign_id: CampaignId, as_json: JsonOption = False) -> None:
    """Show a campaign's cycle, stage, pending approvals and results."""
    from liftloop.campaigns import campaign_status

    settings = get_settings()

    async def main() -> Any:
        temporal = await client.connect(settings, as_json=as_json)
        try:
            return await campaign_status(temporal, campaign_id)
        except Exception as exc:
            output.fail("campaign_id", f"{campaign_id}: {exc}", as_json=as_json)

    st = client.run(main)
    lines = [
        f"{st.campaign_id}: cycle {st.cycle}, stage {st.stage}, outcome {st.outcome}"
        f"{', paused' if st.paused else ''}"
    ]
    lines += [
        f"  approval pending {p.request_id}: {'; '.join(p.reasons)}" for p in st.pending_approvals
    ]
    for c in st.history:
        lift = c.lifts[next(iter(c.lifts))]
        lines.append(
            f"  cycle {c.cycle}: sent {c.sent}, held out {c.held_out}, {lift.metric} lift "
            f"{lift.estimate:+.5f} [{lift.ci_low:+.5f}, {lift.ci_high:+.5f}]"
        )
    output.emit(st.model_dump(mode="json"), as_json=as_json, human="\n".join(lines))


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


def _control(campaign_id: str, action: Literal["pause", "resume", "stop"]) -> None:
    from liftloop.campaigns import control_campaign

    settings = get_settings()

    async def main() -> None:
        temporal = await client.connect(settings)
        try:
            await control_campaign(temporal, campaign_id, action)
        except Exception as exc:
            output.fail("campaign_id", f"{campaign_id}: {exc}")

    client.run(main)
    output.show(f"{action}: sent to {campaign_id}")


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
