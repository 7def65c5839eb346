"""The approval inbox and its decisions. Everyone signed in reads it; approvers get the buttons
where the rules let them decide. A posted decision goes through `approvals.requests`, the path
the API, Slack and the CLI take, so the same rules refuse it (a 403 page naming the rule)."""

from __future__ import annotations

import asyncio
import re

from fastapi import APIRouter, Request
from fastapi.responses import Response

from approvals.requests import (
    ApprovalConflict,
    ApprovalNotFound,
    ApprovalProofRefused,
    check_request,
    decide_approval,
    decide_identical,
    get_approval,
)
from approvals.rules import Decider
from liftloop.loop.spec import text_problem
from liftloop.web.inbox_items import pending_items
from liftloop.web.pages import PageError, PageRoute, redirect, render
from liftloop.web.session import Context, Form, SignedIn

router = APIRouter(route_class=PageRoute, include_in_schema=False)

# As the API's decision body allows.
MAX_NOTE_CHARS = 2000
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:@-]{1,300}$")
_VERDICTS = {"approve": True, "reject": False}


def request_id_of(value: str) -> str:
    if not _REQUEST_ID.match(value):
        raise PageError(404, "No such request", "this is not an approval request id")
    return value


@router.get("/approvals")
async def inbox(request: Request, ctx: Context, session: SignedIn) -> Response:
    items, more = await asyncio.to_thread(pending_items, ctx.engine, session.user)
    decided = None
    shown = request.query_params.get("decided", "")
    if shown and _REQUEST_ID.match(shown):
        try:
            found = get_approval(ctx.engine, shown)
        except ApprovalNotFound:
            found = None
        # Said only when it is true: the query names a request, the database tells its state.
        if found is not None and found.status in ("approved", "rejected"):
            decided = found
    return render(request, "inbox.html", items=items, more=more, decided=decided)


@router.post("/approvals/{request_id}/decide")
async def decide(request: Request, request_id: str, ctx: Context, form: Form) -> Response:
    rid = request_id_of(request_id)
    approved = _VERDICTS.get(form.text("verdict", max_chars=10))
    if approved is None:
        raise PageError(422, "Invalid field", "verdict: must be approve or reject")
    note = form.text("note", max_chars=MAX_NOTE_CHARS, required=False)
    bad = text_problem(note)
    if bad:
        raise PageError(422, "Invalid field", f"note: {bad}")
    decider = Decider(form.session.user, "web")
    try:
        # The rules first, without Temporal: a refusal is a 403 page naming its rule.
        waiting = check_request(ctx.engine, rid, decider, approved, note)
        client = await ctx.temporal() if waiting else None
        if form.form.get("identical") == "on":
            outcome = await decide_identical(
                client,
                ctx.engine,
                rid,
                approved,
                decider,
                note,
                signing_key=ctx.approval_signing_key,
                audit=ctx.audit,
                notifier=ctx.notifier,
            )
            return render(request, "bulk_result.html", outcome=outcome, approved=approved)
        await decide_approval(
            client,
            ctx.engine,
            rid,
            approved,
            decider,
            note,
            signing_key=ctx.approval_signing_key,
            audit=ctx.audit,
            notifier=ctx.notifier,
        )
    except ApprovalNotFound as exc:
        raise PageError(404, "No such request", exc.reason) from None
    except ApprovalConflict as exc:
        raise PageError(409, "Not waiting any more", exc.reason) from None
    except ApprovalProofRefused as exc:
        raise PageError(503, "Decision not delivered", exc.reason) from None
    return redirect(f"/approvals?decided={rid}")
