"""The planner agent: `plan BRIEF`, `plan-status THREAD`, `plan-decide THREAD`.

`plan` runs the graph up to its approval step and prints the spec with the tools' evidence; the
thread waits in `<data_dir>/planner.sqlite`, so `plan-decide` answers it in another process,
later. Run `plan` again with the same brief (and campaign id) after a crash: the plan goes on
from its last completed step. `plan-decide --approve --start` starts the campaign as
`liftloop campaign start` does; `--spec-out` writes the approved spec for that command.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml

from liftloop.cli import client, output
from liftloop.cli.output import JsonOption
from liftloop.settings import get_settings

if TYPE_CHECKING:
    from agents.planner import PlanResult
    from liftloop.campaigns import CampaignStarted
    from liftloop.loop.spec import CampaignSpec

app = typer.Typer()

ThreadId = Annotated[str, typer.Argument(help="the plan's thread id (plan-<campaign id>)")]


def register(root: typer.Typer) -> None:
    """Add `plan`, `plan-status` and `plan-decide` to `root`."""
    root.add_typer(app)


def _evidence_lines(result: PlanResult) -> list[str]:
    evidence = result.evidence
    lines = [f"{key}: {value}" for key, value in evidence.items() if value not in (None, [], {})]
    lines.append(
        f"model: {result.usage.model}, {result.usage.requests} requests, "
        f"{result.usage.input_tokens}+{result.usage.output_tokens} tokens, "
        f"{result.usage.cost_eur:.4f} EUR"
    )
    return lines


def _human(result: PlanResult) -> str:
    spec = yaml.safe_dump(result.spec, sort_keys=False, allow_unicode=True) if result.spec else ""
    tools = ", ".join(c.tool for c in result.tool_calls)
    return "\n".join(
        [
            spec.rstrip(),
            f"tools: {tools}",
            *_evidence_lines(result),
            f"status: {result.status} (thread {result.thread_id})",
        ]
    ).lstrip()


@app.command("plan")
def plan(
    brief: Annotated[str, typer.Argument(help="what the campaign should do, in prose")],
    campaign_id: Annotated[
        str | None,
        typer.Option(help="id of the campaign to plan (default: derived from the brief)"),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Turn a brief into a campaign spec with the planner agent; stops where a human approves."""
    from agents.planner import PlanFailed, PlanningError
    from liftloop.planning import plan_desk

    try:
        with plan_desk(get_settings()) as desk:
            result = desk.plan(brief, campaign_id)
    except PlanFailed as exc:
        output.fail_on(exc, as_json=as_json, code=output.FAILURE)
    except PlanningError as exc:
        output.fail_on(exc, as_json=as_json)
    output.emit(result.model_dump(mode="json"), as_json=as_json, human=_human(result))


@app.command("plan-status")
def plan_status_cmd(thread_id: ThreadId, as_json: JsonOption = False) -> None:
    """Show a plan: its status, spec, evidence and tool calls."""
    from agents.planner import PlanningError
    from liftloop.planning import plan_desk

    try:
        with plan_desk(get_settings()) as desk:
            result = desk.status(thread_id)
    except PlanningError as exc:
        output.fail_on(exc, as_json=as_json)
    output.emit(result.model_dump(mode="json"), as_json=as_json, human=_human(result))


@app.command("plan-decide")
def plan_decide(
    thread_id: ThreadId,
    approve: Annotated[
        bool | None, typer.Option("--approve/--reject", help="the decision (one is required)")
    ] = None,
    approver: Annotated[str | None, typer.Option("--by", help="who decides")] = None,
    comment: Annotated[str, typer.Option(help="why, for the record")] = "",
    start: Annotated[
        bool, typer.Option("--start", help="start the campaign once approved")
    ] = False,
    spec_out: Annotated[
        Path | None,
        typer.Option(
            dir_okay=False, help="write the approved spec here, for `liftloop campaign start`"
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Approve or reject a plan that waits at its approval step."""
    from agents.planner import ApprovalDecision, PlanningError
    from liftloop.planning import PlanDecided, plan_desk
    from liftloop.telemetry import flush_tracing, setup_tracing

    if approve is None:
        output.fail("--approve/--reject", "give the decision", as_json=as_json)
    if start and not approve:
        output.fail("--start", "only an approved plan starts a campaign", as_json=as_json)
    settings = get_settings()
    actor = client.actor(settings)
    try:
        decision = ApprovalDecision(approved=approve, approver=approver or actor, comment=comment)
    except ValueError as exc:
        output.fail_on(exc, as_json=as_json)

    async def start_campaign(spec: CampaignSpec) -> CampaignStarted:
        from temporalio.exceptions import WorkflowAlreadyStartedError

        from liftloop.audit import audit_log
        from liftloop.campaigns import start_campaign

        temporal = await client.connect(settings, as_json=as_json)
        try:
            return await start_campaign(
                temporal, settings, spec, audit=audit_log(settings), actor=actor
            )
        except WorkflowAlreadyStartedError:
            output.fail("campaign_id", f"campaign {spec.id} is already running", as_json=as_json)

    async def main() -> PlanDecided:
        with plan_desk(settings) as desk:
            return await desk.decide(
                thread_id, decision, actor=actor, start=start_campaign if start else None
            )

    if start:  # the start is the root of the campaign's first trace, as in `campaign start`
        setup_tracing(settings, "cli")
    try:
        decided = client.run(main)
    except PlanningError as exc:
        output.fail_on(exc, as_json=as_json)
    finally:
        flush_tracing()
    result = decided.plan
    if spec_out is not None and result.status == "approved":
        text = yaml.safe_dump(result.spec, sort_keys=False, allow_unicode=True)
        try:
            spec_out.write_text(text, encoding="utf-8")
        except OSError as exc:
            output.fail("--spec-out", f"cannot write {spec_out.name} ({exc.strerror})")
    payload: dict[str, Any] = result.model_dump(mode="json")
    if decided.campaign is not None:
        payload["campaign"] = decided.campaign.model_dump(mode="json")
    human = f"{thread_id}: {result.status}"
    if decided.campaign is not None:
        human += f"; started {decided.campaign.campaign_id} as {decided.campaign.workflow_id}"
    output.emit(payload, as_json=as_json, human=human)
