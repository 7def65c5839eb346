"""The embedded runtime and the demo: `up`, `down`, `status`, `demo`, hidden `serve`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import typer
from rich.table import Table

from liftloop import runtime
from liftloop.cli import client, output
from liftloop.cli.output import JsonOption
from liftloop.settings import Settings, get_settings

app = typer.Typer()


def register(root: typer.Typer) -> None:
    """Add these commands to `root`."""
    root.add_typer(app)


@app.command()
def up() -> None:
    """Start the embedded runtime: Temporal dev server, SMTP server, worker and API."""
    settings = get_settings()
    try:
        credentials = runtime.prepare_credentials(settings)
        states = runtime.up(settings)
    except runtime.RuntimeStartError as exc:
        output.fail_on(exc, code=output.FAILURE)
    _print_status(states, settings)
    output.echo(credentials.describe())
    for warning in credentials.warnings:
        output.echo(f"{typer.style('warning:', fg='yellow')} {warning}", err=True)


@app.command()
def down() -> None:
    """Stop what `liftloop up` started."""
    stopped = runtime.down(get_settings())
    output.show("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@app.command()
def restart(
    service: Annotated[
        Literal["temporal", "smtp", "worker", "api"], typer.Argument(help="The service.")
    ],
) -> None:
    """Restart one service of the embedded runtime (after a settings change, say); a worker's
    in-flight sends resume where they stopped."""
    try:
        away = runtime.restart_service(get_settings(), service)
    except runtime.RuntimeStartError as exc:
        output.fail(service, str(exc), code=output.FAILURE)
    output.show(f"restarted {service} ({away:.1f} s away)")


@app.command()
def status(as_json: JsonOption = False) -> None:
    """Show the embedded runtime's processes."""
    settings = get_settings()
    states = runtime.status(settings)
    if as_json:
        output.emit(
            {s.name: {"running": s.running, "pid": s.pid, "endpoint": s.endpoint} for s in states},
            as_json=True,
        )
        return
    _print_status(states, settings)


def _print_status(states: list[runtime.ServiceState], settings: Settings) -> None:
    rows = [
        (
            s.name,
            "[green]running[/green]" if s.running else "[dim]stopped[/dim]",
            s.pid or "",
            s.endpoint,
        )
        for s in states
    ]
    output.show(output.table("service", "state", "pid", "endpoint", rows=rows))
    if settings.embedded_temporal:
        output.show(f"Temporal UI: {runtime.ui_url(settings)}")


@app.command(hidden=True)
def serve(service: Literal["worker", "smtp", "api"]) -> None:
    """Run one service in the foreground (used by `liftloop up`)."""
    from liftloop import services
    from liftloop.credentials import ensure_credentials

    settings = get_settings()
    runner = {
        "worker": services.serve_worker,
        "smtp": services.serve_smtp,
        "api": services.serve_api,
    }[service]
    try:
        if service != "smtp":  # keys first: a public value fails before anything connects
            ensure_credentials(settings)
        runner(settings)
    except Exception as exc:
        # Stderr is the service's log file: the traceback belongs there.
        raise typer.Exit(output.unexpected_error(exc, always_traceback=True)) from None


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
        Literal["uniform", "thompson", "nba"],
        typer.Option(
            help="Decision policy: uniform, thompson or nba (next best action by expected margin)."
        ),
    ] = "uniform",
    generator: Annotated[
        Literal["template", "copywriter"],
        typer.Option(
            help="Copy from the built-in templates, or written by the copywriter agent with the"
            " model of LIFTLOOP_LLM_MODEL (offline by default) over the brand knowledge."
        ),
    ] = "template",
    as_json: JsonOption = False,
) -> None:
    """Run a whole campaign loop on the embedded default and report lift against the truth."""
    from liftloop.demo import TemporalUnreachable, run_demo
    from liftloop.telemetry import flush_tracing, setup_tracing

    settings = get_settings().model_copy(update={"approval_timeout_s": approval_timeout})
    # Progress, stages and escalations go to stderr: stdout holds the report alone (Temporal's
    # core would write there too, its retries while the server restarts).
    bar = output.progress()
    task = bar.add_task("starting the runtime", total=cycles)
    progress = bar.console
    seen: set[str] = set()

    def on_step(step: str) -> None:
        bar.update(task, description=step)

    def on_status(st: Any) -> None:
        bar.update(
            task, completed=len(st.history), description=f"cycle {st.cycle} of {cycles}: {st.stage}"
        )
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
                        f"  answer as an approver: LIFTLOOP_TOKEN=… liftloop approvals approve"
                        f" {p.request_id}  (or reject --note WHY)"
                    )

    async def main() -> Any:
        return await run_demo(
            await client.connect(settings, as_json=as_json),
            settings,
            profiles=profiles,
            cycles=cycles,
            approve_all=approve_all,
            policy=policy,
            generator=generator,
            on_status=on_status,
            on_step=on_step,
            ui_url=lambda wid: runtime.ui_url(settings, wid),
        )

    with bar:
        try:
            runtime.up(settings)
        except runtime.RuntimeStartError as exc:
            output.fail_on(exc, as_json=as_json, code=output.FAILURE)
        setup_tracing(settings, "cli")
        try:
            # The wait survives restarts of Temporal; only one that does not come back ends it.
            report = client.run(main)
        except TemporalUnreachable as exc:
            flush_tracing()
            output.fail_on(exc, as_json=as_json, code=output.FAILURE)
        # The last poll may have come before the last cycle ended.
        bar.update(task, completed=cycles, description=f"{report.cycles} cycles: {report.outcome}")
    flush_tracing()
    output.emit(report.model_dump(mode="json"), as_json=as_json, human=_demo_table(report))


def _demo_table(r: Any) -> Table:
    rows: list[tuple[str, Any]] = [
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
    if r.model_costs is not None:
        c = r.model_costs
        rows.append(
            (
                "model calls",
                f"{c.requests} requests, {c.input_tokens} + {c.output_tokens} tokens,"
                f" EUR {c.cost_eur:.6f}",
            )
        )
    rows += [("Temporal UI", r.temporal_ui), ("trace id", r.trace_id)]
    return output.table(
        rows=rows, title=f"campaign {r.campaign_id}: {r.outcome}", show_header=False
    )
