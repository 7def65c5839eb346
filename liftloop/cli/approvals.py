"""`liftloop approvals list|approve|reject`: answer the loop's escalations."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from liftloop.cli import client, output
from liftloop.cli.output import JsonOption
from liftloop.settings import get_settings

app = typer.Typer(name="approvals", help="Answer escalations.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    """Add the `approvals` group to `root`."""
    root.add_typer(app)


RequestId = Annotated[str, typer.Argument(help="The approval request's id.")]
NoteOption = Annotated[str, typer.Option("--note", help="Why (required to reject).")]
IdenticalOption = Annotated[
    bool,
    typer.Option("--identical", help="Also every pending request identical to this one."),
]


@app.command("list")
def approvals_list(
    all_: Annotated[bool, typer.Option("--all", help="Include decided requests.")] = False,
    as_json: JsonOption = False,
) -> None:
    """List approval requests (pending ones by default)."""
    from approvals.requests import list_approvals
    from liftloop.db import engine_for

    views = list_approvals(engine_for(get_settings().cdp_url), None if all_ else "pending")
    rows = [
        (
            v.request_id,
            v.campaign_id,
            v.cycle,
            v.status,
            f"{v.deadline_at:%Y-%m-%d %H:%M}" if v.deadline_at else "-",
            "; ".join(v.reasons),
        )
        for v in views
    ]
    output.emit(
        {"approvals": [v.model_dump(mode="json") for v in views]},
        as_json=as_json,
        human=output.table(
            "request", "campaign", "cycle", "status", "deadline", "reasons", rows=rows
        ),
    )


def _decide(request_id: str, approved: bool, note: str, identical: bool) -> None:
    from approvals.requests import (
        ApprovalConflict,
        ApprovalNotFound,
        ApprovalProofRefused,
        check_request,
        decide_approval,
        decide_identical,
    )
    from approvals.rules import Decider, DecisionRefused
    from liftloop.audit import audit_log
    from liftloop.credentials import approval_signing_key
    from liftloop.db import engine_for
    from liftloop.notifications import approval_notifier

    settings = get_settings()
    user = client.signed_in(settings)
    if user is None:
        output.fail(client.TOKEN_ENV, "set it to your personal token (liftloop users token NAME)")
    decider = Decider(user, "cli")
    engine = engine_for(settings.cdp_url)
    # The decision's proof: signed with the key the worker checks (the data directory's, or
    # LIFTLOOP_APPROVAL_SIGNING_KEY).
    key = approval_signing_key(settings)
    notifier = approval_notifier(settings, engine)

    async def main() -> list[Any]:
        # Refused or unknown before Temporal is asked.
        waiting = check_request(engine, request_id, decider, approved, note)
        temporal = await client.connect(settings) if waiting else None
        if identical:
            bulk = await decide_identical(
                temporal,
                engine,
                request_id,
                approved,
                decider,
                note,
                signing_key=key,
                audit=audit_log(settings),
                notifier=notifier,
            )
            for rid, reason in bulk.refused.items():
                output.echo(f"{rid}: not decided ({reason})", err=True)
            return list(bulk.decided)
        one = await decide_approval(
            temporal,
            engine,
            request_id,
            approved,
            decider,
            note,
            signing_key=key,
            audit=audit_log(settings),
            notifier=notifier,
        )
        return [one]

    try:
        outcomes = client.run(main)
    except ApprovalProofRefused as exc:
        output.fail_on(exc, code=output.FAILURE)
    except (ApprovalNotFound, ApprovalConflict) as exc:
        output.fail_on(exc)
    except DecisionRefused as exc:
        output.fail(exc.field, f"{exc.rule}: {exc.reason}")
    if not outcomes:
        output.fail("request_id", "nothing was decided")
    for outcome in outcomes:
        verdict = "approved" if outcome.approved else "rejected"
        output.show(f"{outcome.request_id}: {verdict} by {outcome.decided_by}")


@app.command("approve")
def approvals_approve(
    request_id: RequestId, note: NoteOption = "", identical: IdenticalOption = False
) -> None:
    """Approve a pending request, as the user of LIFTLOOP_TOKEN (an approver)."""
    _decide(request_id, True, note, identical)


@app.command("reject")
def approvals_reject(
    request_id: RequestId, note: NoteOption = "", identical: IdenticalOption = False
) -> None:
    """Reject a pending request, as the user of LIFTLOOP_TOKEN (an approver), with a note."""
    _decide(request_id, False, note, identical)
