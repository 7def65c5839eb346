"""`liftloop approvals list|approve|reject`: answer the loop's escalations."""

from __future__ import annotations

import os
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
ByOption = Annotated[str, typer.Option("--by", help="Who decides.")]
NoteOption = Annotated[str, typer.Option("--note", help="Why.")]


@app.command("list")
def approvals_list(
    all_: Annotated[bool, typer.Option("--all", help="Include decided requests.")] = False,
    as_json: JsonOption = False,
) -> None:
    """List approval requests (pending ones by default)."""
    from approvals.requests import list_approvals
    from liftloop.db import engine_for

    views = list_approvals(engine_for(get_settings().cdp_url), None if all_ else "pending")
    rows = [(v.request_id, v.campaign_id, v.cycle, v.status, "; ".join(v.reasons)) for v in views]
    output.emit(
        {"approvals": [v.model_dump() for v in views]},
        as_json=as_json,
        human=output.table("request", "campaign", "cycle", "status", "reasons", rows=rows),
    )


def _decide(request_id: str, approved: bool, by: str, note: str) -> None:
    from approvals.requests import (
        ApprovalConflict,
        ApprovalNotFound,
        ApprovalProofRefused,
        decide_approval,
    )
    from liftloop.audit import audit_log
    from liftloop.credentials import approval_signing_key
    from liftloop.db import engine_for

    settings = get_settings()
    # The decision's proof: signed with the key the worker checks (the data directory's, or
    # LIFTLOOP_APPROVAL_SIGNING_KEY).
    key = approval_signing_key(settings)

    async def main() -> Any:
        return await decide_approval(
            await client.connect(settings),
            engine_for(settings.cdp_url),
            request_id,
            approved,
            by,
            note,
            signing_key=key,
            audit=audit_log(settings),
        )

    try:
        outcome = client.run(main)
    except ApprovalProofRefused as exc:
        output.fail_on(exc, code=output.FAILURE)
    except (ApprovalNotFound, ApprovalConflict) as exc:
        output.fail_on(exc)
    output.show(
        f"{request_id}: {'approved' if outcome.approved else 'rejected'} by {outcome.decided_by}"
    )


@app.command("approve")
def approvals_approve(request_id: RequestId, by: ByOption = "cli", note: NoteOption = "") -> None:
    """Approve a pending request."""
    _decide(request_id, True, by or os.environ.get("USER", "cli"), note)


@app.command("reject")
def approvals_reject(request_id: RequestId, by: ByOption = "cli", note: NoteOption = "") -> None:
    """Reject a pending request."""
    _decide(request_id, False, by or os.environ.get("USER", "cli"), note)
