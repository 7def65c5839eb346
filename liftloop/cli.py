"""The `liftloop` command line."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from liftloop import cli_cdp, cli_knowledge, cli_measure, cli_models, cli_policies, runtime
from liftloop.settings import Settings, get_settings

T = TypeVar("T")
app = typer.Typer(
    help="liftloop: durable campaign loops that prove lift against a holdout.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
campaign_app = typer.Typer(help="Start and control campaigns.", no_args_is_help=True)
approvals_app = typer.Typer(help="Answer escalations.", no_args_is_help=True)
app.add_typer(campaign_app, name="campaign")
app.add_typer(approvals_app, name="approvals")
out = Console()
err = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def _emit(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = 2) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def _run(make: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(make())  # type: ignore[arg-type]


async def _client(settings: Settings) -> Any:
    from liftloop.temporal import connect

    try:
        return await connect(settings)
    except Exception as exc:
        fail(f"temporal at {settings.temporal_target}: {exc}. Start it with `liftloop up`.")


# -- runtime ---------------------------------------------------------------------------------
@app.command()
def up() -> None:
    """Start the embedded runtime: Temporal dev server, SMTP server, worker and API."""
    settings = get_settings()
    try:
        states = runtime.up(settings)
    except runtime.RuntimeStartError as exc:
        fail(str(exc))
    _print_status(states, settings)


@app.command()
def down() -> None:
    """Stop what `liftloop up` started."""
    stopped = runtime.down(get_settings())
    out.print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@app.command()
def status(as_json: JsonFlag = False) -> None:
    """Show the embedded runtime's processes."""
    settings = get_settings()
    states = runtime.status(settings)
    if as_json:
        _emit(
            {s.name: {"running": s.running, "pid": s.pid, "endpoint": s.endpoint} for s in states}
        )
        return
    _print_status(states, settings)


def _print_status(states: list[runtime.ServiceState], settings: Settings) -> None:
    table = Table("service", "state", "pid", "endpoint")
    for s in states:
        table.add_row(
            s.name,
            "[green]running[/green]" if s.running else "[dim]stopped[/dim]",
            str(s.pid or ""),
            s.endpoint,
        )
    out.print(table)
    if settings.embedded_temporal:
        out.print(f"Temporal UI: {runtime.ui_url(settings)}")


@app.command(hidden=True)
def serve(service: str) -> None:
    """Run one service in the foreground (used by `liftloop up`)."""
    from liftloop import services

    settings = get_settings()
    runner = {
        "worker": services.serve_worker,
        "smtp": services.serve_smtp,
        "api": services.serve_api,
    }.get(service)
    if runner is None:
        fail(f"service: unknown service {service!r}")
        return
    runner(settings)


# -- demo ------------------------------------------------------------------------------------
@app.command()
def demo(
    profiles: Annotated[int, typer.Option(min=100, help="Synthetic profiles to seed.")] = 20000,
    cycles: Annotated[int, typer.Option(min=1, max=50, help="Cycles to run.")] = 2,
    approve_all: Annotated[
        bool, typer.Option("--approve-all", help="Approve every escalation.")
    ] = False,
    approval_timeout: Annotated[
        float,
        typer.Option(
            min=1, help="Seconds an escalation waits for an answer before it is rejected."
        ),
    ] = 120.0,
    policy: Annotated[
        str,
        typer.Option(
            help="Decision policy: uniform, thompson or nba (next best action by expected margin)."
        ),
    ] = "uniform",
    as_json: JsonFlag = False,
) -> None:
    """Run a whole campaign loop on the embedded default and report lift against the truth."""
    from liftloop.demo import run_demo
    from liftloop.telemetry import flush_tracing, setup_tracing

    if policy not in ("uniform", "thompson", "nba"):
        fail(f"--policy: must be uniform, thompson or nba, not {policy!r}")
    settings = get_settings().model_copy(update={"approval_timeout_s": approval_timeout})
    progress = err if as_json else out
    try:
        runtime.up(settings)
    except runtime.RuntimeStartError as exc:
        fail(str(exc))
    setup_tracing(settings, "cli")
    seen: set[str] = set()

    def on_status(st: Any) -> None:
        key = f"cycle {st.cycle}: {st.stage}"
        if key not in seen:
            seen.add(key)
            progress.print(f"[cyan]{st.campaign_id}[/cyan] {key}")
        for p in st.pending_approvals:
            if p.request_id not in seen:
                seen.add(p.request_id)
                progress.print(
                    f"  [yellow]approval pending[/yellow] {p.request_id}: {'; '.join(p.reasons)}"
                )
                if not approve_all:
                    progress.print(
                        f"  answer with: liftloop approvals approve {p.request_id}  (or reject)"
                    )

    async def main() -> Any:
        client = await _client(settings)
        return await run_demo(
            client,
            settings,
            profiles=profiles,
            cycles=cycles,
            approve_all=approve_all,
            policy=policy,
            on_status=on_status,
            ui_url=lambda wid: runtime.ui_url(settings, wid),
        )

    report = _run(main)
    flush_tracing()
    if as_json:
        _emit(report.model_dump(mode="json"))
        return
    _print_demo(report)


def _print_demo(r: Any) -> None:
    table = Table(title=f"campaign {r.campaign_id}: {r.outcome}", show_header=False)
    rows = [
        ("profiles", r.profiles),
        ("cycles", r.cycles),
        ("sent", r.sent),
        ("held out", r.held_out),
        ("failed", r.failed),
        ("suppressed", r.suppressed),
        ("approvals", f"{r.approvals['approved']} approved of {r.approvals['requested']}"),
        ("duplicates", r.duplicates),
    ]
    for metric, lift in r.lifts.items():
        rows.append(
            (
                f"lift on {metric}",
                f"{lift.estimate:+.5f}  95% CI [{lift.ci_low:+.5f}, {lift.ci_high:+.5f}]"
                f"  true {lift.true_lift:+.5f}",
            )
        )
    rows += [("Temporal UI", r.temporal_ui), ("trace id", r.trace_id)]
    for k, v in rows:
        table.add_row(k, str(v))
    out.print(table)


# -- campaigns -------------------------------------------------------------------------------
@campaign_app.command("start")
def campaign_start(spec_file: Path, as_json: JsonFlag = False) -> None:
    """Start a campaign from a YAML spec."""
    from liftloop.campaigns import start_campaign
    from liftloop.domain import SpecError, load_spec

    settings = get_settings()
    try:
        spec = load_spec(spec_file)
    except SpecError as exc:
        for field, reason in exc.problems:
            err.print(f"[red]invalid spec[/red] {field}: {reason}")
        raise typer.Exit(2) from None

    async def main() -> Any:
        from temporalio.exceptions import WorkflowAlreadyStartedError

        try:
            return await start_campaign(await _client(settings), settings, spec)
        except WorkflowAlreadyStartedError:
            fail(f"id: campaign {spec.id} is already running")

    started = _run(main)
    if as_json:
        _emit(started.model_dump())
    else:
        out.print(f"started {started.campaign_id} as workflow {started.workflow_id}")
        out.print(runtime.ui_url(settings, started.workflow_id))


@campaign_app.command("status")
def campaign_status_cmd(campaign_id: str, as_json: JsonFlag = False) -> None:
    """Show a campaign's cycle, stage, pending approvals and results."""
    from liftloop.campaigns import campaign_status

    settings = get_settings()

    async def main() -> Any:
        return await campaign_status(await _client(settings), campaign_id)

    try:
        st = _run(main)
    except Exception as exc:
        fail(f"campaign_id: {campaign_id}: {exc}")
        return
    if as_json:
        _emit(st.model_dump(mode="json"))
        return
    out.print(
        f"{st.campaign_id}: cycle {st.cycle}, stage {st.stage}, outcome {st.outcome}"
        f"{', paused' if st.paused else ''}"
    )
    for p in st.pending_approvals:
        out.print(f"  approval pending {p.request_id}: {'; '.join(p.reasons)}")
    for c in st.history:
        lift = c.lifts[next(iter(c.lifts))]
        out.print(
            f"  cycle {c.cycle}: sent {c.sent}, held out {c.held_out}, {lift.metric} lift "
            f"{lift.estimate:+.5f} [{lift.ci_low:+.5f}, {lift.ci_high:+.5f}]"
        )


@campaign_app.command("decisions")
def campaign_decisions(
    campaign_id: str,
    out_file: Annotated[
        Path, typer.Option("--out", help="JSON Lines file to write, one round per line.")
    ],
    as_json: JsonFlag = False,
) -> None:
    """Export the campaign's measured decisions as bandit feedback for `liftloop ope --logs`."""
    from liftloop.db import engine_for
    from liftloop.decision_log import export_bandit_log

    export = export_bandit_log(engine_for(get_settings().cdp_url), campaign_id)
    if not export.rounds:
        fail(f"campaign_id: {campaign_id}: no measured decisions")
    with out_file.open("w", encoding="utf-8") as handle:
        for r in export.rounds:
            handle.write(r.model_dump_json() + "\n")
    summary = {
        "rounds": len(export.rounds),
        "unmeasured": export.unmeasured,
        "segments": export.segments,
        "arms": export.arms,
        "file": str(out_file),
    }
    if as_json:
        _emit(summary)
    else:
        out.print(
            f"{len(export.rounds)} rounds written to {out_file} ({export.unmeasured} not yet "
            f"measured); actions: {', '.join(f'{i}={a}' for i, a in enumerate(export.arms))}"
        )


def _control(campaign_id: str, action: str) -> None:
    from liftloop.campaigns import control_campaign

    settings = get_settings()

    async def main() -> None:
        await control_campaign(await _client(settings), campaign_id, action)  # type: ignore[arg-type]

    try:
        _run(main)
    except Exception as exc:
        fail(f"campaign_id: {campaign_id}: {exc}")
    out.print(f"{action}: sent to {campaign_id}")


@campaign_app.command("pause")
def campaign_pause(campaign_id: str) -> None:
    """Pause before the next stage."""
    _control(campaign_id, "pause")


@campaign_app.command("resume")
def campaign_resume(campaign_id: str) -> None:
    """Resume a paused campaign."""
    _control(campaign_id, "resume")


@campaign_app.command("stop")
def campaign_stop(campaign_id: str) -> None:
    """Stop after the current stage; what was sent is still measured."""
    _control(campaign_id, "stop")


# -- approvals -------------------------------------------------------------------------------
@approvals_app.command("list")
def approvals_list(
    all_: Annotated[bool, typer.Option("--all", help="Include decided requests.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """List approval requests (pending ones by default)."""
    from approvals.requests import list_approvals
    from liftloop.db import engine_for

    views = list_approvals(engine_for(get_settings().cdp_url), None if all_ else "pending")
    if as_json:
        _emit({"approvals": [v.model_dump() for v in views]})
        return
    table = Table("request", "campaign", "cycle", "status", "reasons")
    for v in views:
        table.add_row(v.request_id, v.campaign_id, str(v.cycle), v.status, "; ".join(v.reasons))
    out.print(table)


def _decide(request_id: str, approved: bool, by: str, note: str) -> None:
    from approvals.requests import ApprovalNotFound, decide_approval
    from liftloop.db import engine_for

    settings = get_settings()

    async def main() -> Any:
        return await decide_approval(
            await _client(settings), engine_for(settings.cdp_url), request_id, approved, by, note
        )

    try:
        outcome = _run(main)
    except ApprovalNotFound as exc:
        fail(str(exc))
        return
    out.print(
        f"{request_id}: {'approved' if outcome.approved else 'rejected'} by {outcome.decided_by}"
    )


ByOption = Annotated[str, typer.Option("--by", help="Who decides.")]
NoteOption = Annotated[str, typer.Option("--note", help="Why.")]


@approvals_app.command("approve")
def approvals_approve(request_id: str, by: ByOption = "cli", note: NoteOption = "") -> None:
    """Approve a pending request."""
    _decide(request_id, True, by or os.environ.get("USER", "cli"), note)


@approvals_app.command("reject")
def approvals_reject(request_id: str, by: ByOption = "cli", note: NoteOption = "") -> None:
    """Reject a pending request."""
    _decide(request_id, False, by or os.environ.get("USER", "cli"), note)


for _register in (
    cli_policies.register,
    cli_models.register,
    cli_measure.register,
    cli_knowledge.register,
    cli_cdp.register,
):
    _register(app)


def main() -> None:
    """Exit through os._exit after flushing: the Temporal client's threads occasionally crash
    an orderly interpreter shutdown, which must not turn a finished command into a failure."""
    code = 0
    try:
        # Without standalone mode click returns the exit code of a typer.Exit.
        result = app(standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except typer.Exit as exc:
        code = exc.exit_code
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:
        from click.exceptions import ClickException

        if isinstance(exc, ClickException):
            exc.show()
            code = exc.exit_code
        else:
            err.print_exception()
            code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
