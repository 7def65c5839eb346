"""A campaign's audit timeline for auditors (and everyone signed in): its entries in the order
they were written, with actor and time. Read-only; nothing here posts."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from liftloop.web.campaign_pages import campaign_id_of
from liftloop.web.pages import PageRoute, render
from liftloop.web.session import Context, SignedIn
from tools.audit import timeline

router = APIRouter(route_class=PageRoute, include_in_schema=False)

# The newest this many entries; the CLI and the API export them all.
TIMELINE_LIMIT = 2000
# Details too long to read in a row (a whole spec) are folded away.
_FOLD_CHARS = 160


def detail_rows(details: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(key, value as text, folded) per detail, in a stable order: a short value inline, a
    long one (a whole spec) indented and folded away."""
    rows = []
    for key in sorted(details):
        value = details[key]
        if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
            text = ", ".join(str(v) for v in value)
        else:
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        if len(text) <= _FOLD_CHARS and "\n" not in text:
            rows.append((key, text, False))
        else:
            long = value if isinstance(value, str) else json.dumps(value, sort_keys=True, indent=1)
            rows.append((key, long, True))
    return rows


@router.get("/campaigns/{campaign_id}/timeline")
async def campaign_timeline(
    request: Request, campaign_id: str, ctx: Context, session: SignedIn
) -> Response:
    cid = campaign_id_of(campaign_id)
    entries = await asyncio.to_thread(timeline, ctx.engine, campaign_id=cid, limit=TIMELINE_LIMIT)
    return render(
        request,
        "timeline.html",
        campaign_id=cid,
        entries=entries,
        truncated=len(entries) >= TIMELINE_LIMIT,
        detail_rows=detail_rows,
    )
