"""The audit log: `audit verify`, `audit show`, `audit export`, `audit checkpoint`, and a
message's provenance: `audit message`."""

from __future__ import annotations

import json
import re
from typing import Annotated, Literal

import typer

from liftloop.cli import output
from liftloop.cli.output import JsonOption, OutputOption
from liftloop.loop.spec import CAMPAIGN_ID_PATTERN
from liftloop.settings import get_settings

audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)

CampaignOption = Annotated[
    str | None, typer.Option("--campaign", help="Only this campaign's entries.")
]


def register(root: typer.Typer) -> None:
    """Add these commands to `root`."""
    root.add_typer(audit_app, name="audit")


def _checked_campaign(campaign: str | None, as_json: bool) -> str | None:
    if campaign is not None and not re.fullmatch(CAMPAIGN_ID_PATTERN, campaign):
        output.fail("--campaign", f"{campaign!r} is not a campaign id", as_json=as_json)
    return campaign


@audit_app.command("verify")
def audit_verify(as_json: JsonOption = False) -> None:
    """Walk the chain and its signed checkpoints; exit 1 naming the first entry that was
    altered, inserted, removed or reordered."""
    from liftloop.audit import verify

    report = verify(get_settings())
    human = (
        f"ok: {report.entries} entries, {report.checkpoints} checkpoints, head {report.head}"
        if report.ok
        else f"NOT OK at entry {report.first_bad}: {report.reason} ({report.entries} entries)"
    )
    output.emit(report.model_dump(mode="json"), as_json=as_json, human=human)
    if not report.ok:
        raise typer.Exit(output.FAILURE)


@audit_app.command("show")
def audit_show(
    campaign: CampaignOption = None,
    limit: Annotated[int, typer.Option(min=1, help="Without --campaign: the newest N.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """A campaign's timeline (start, approvals, verdicts, sends, controls), or the newest
    entries of the whole log."""
    from liftloop.audit import audit_log
    from tools.audit import timeline

    campaign = _checked_campaign(campaign, as_json)
    log = audit_log(get_settings())
    entries = timeline(log.engine, campaign_id=campaign, limit=None if campaign else limit)
    if campaign is not None and not entries:
        output.fail("--campaign", f"no audit entries for campaign {campaign}", as_json=as_json)
    rows = [
        (
            e.seq,
            e.at.strftime("%Y-%m-%d %H:%M:%S"),
            e.kind,
            e.actor,
            e.subject or "",
            _summary(e.details),
        )
        for e in entries
    ]
    output.emit(
        {"campaign_id": campaign, "entries": [e.model_dump(mode="json") for e in entries]},
        as_json=as_json,
        human=output.table("seq", "at (UTC)", "kind", "actor", "subject", "details", rows=rows),
    )


def _summary(details: dict[str, object]) -> str:
    shown = {k: v for k, v in details.items() if k != "spec"}
    text = json.dumps(shown, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= 120 else text[:119] + "…"


@audit_app.command("export")
def audit_export(
    fmt: Annotated[Literal["json", "csv"], typer.Option("--format", help="json or csv.")] = "json",
    campaign: CampaignOption = None,
    to: OutputOption = None,
) -> None:
    """Every entry (or one campaign's) as JSON or CSV; the head is checkpointed first, so what
    is exported can be verified later."""
    from liftloop.audit import audit_log
    from tools.audit import as_csv, timeline

    campaign = _checked_campaign(campaign, False)
    log = audit_log(get_settings())
    log.checkpoint()
    entries = timeline(log.engine, campaign_id=campaign)
    if fmt == "csv":
        text = as_csv(entries)
    else:
        text = json.dumps([e.model_dump(mode="json") for e in entries], ensure_ascii=False) + "\n"
    output.write_out(text, to, f"{len(entries)} entries")


@audit_app.command("checkpoint")
def audit_checkpoint() -> None:
    """Sign the chain's head now (every 100th entry is signed anyway)."""
    from liftloop.audit import audit_log

    seq = audit_log(get_settings()).checkpoint()
    output.show(f"checkpoint at entry {seq}" if seq else "the log is empty")


@audit_app.command("message")
def audit_message(
    message_id: Annotated[str, typer.Argument(help="The message's id (its Message-ID).")],
    as_json: JsonOption = False,
) -> None:
    """Everything behind one message: the decision (arm, propensity), the variant (template,
    model, knowledge snapshot, policy version and verdict) and the approval."""
    from liftloop.db import engine_for
    from liftloop.loop.provenance import message_provenance

    found = message_provenance(engine_for(get_settings().cdp_url), message_id)
    if found is None:
        output.fail("message_id", f"no message {message_id}", as_json=as_json)
    output.emit(found.model_dump(mode="json"), as_json=as_json)
