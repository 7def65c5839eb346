"""Privacy records and retention: `privacy records`, `privacy dpia`, `privacy retention`."""

from __future__ import annotations

from typing import Annotated

import typer

from liftloop.cli import client, output
from liftloop.cli.output import JsonOption, OutputOption
from liftloop.settings import get_settings

privacy_app = typer.Typer(
    help="Records of processing, the DPIA draft and retention.", no_args_is_help=True
)


def register(root: typer.Typer) -> None:
    """Add these commands to `root`."""
    root.add_typer(privacy_app, name="privacy")


@privacy_app.command("records")
def privacy_records(as_json: JsonOption = False) -> None:
    """The records of processing, generated from this installation's configuration."""
    from liftloop.privacy_records import records_of_processing
    from tools.cdp.contracts import ContractRegistry

    records = records_of_processing(get_settings(), ContractRegistry.load())
    human = "\n".join(
        [
            f"controller: {records.controller}",
            "purposes:",
            *(f"  {p.name}: {p.legal_basis}" for p in records.purposes),
            "data categories:",
            *(f"  {c.name}: {c.retention}" for c in records.categories),
            "recipients:",
            *(f"  {r.name}: {r.endpoint} ({r.location})" for r in records.recipients),
            "transfers: " + ("; ".join(records.transfers) or "none configured"),
        ]
    )
    output.emit(records.model_dump(mode="json"), as_json=as_json, human=human)


@privacy_app.command("dpia")
def privacy_dpia(
    to: OutputOption = None,
) -> None:
    """A DPIA draft in Markdown, filled from the records of processing."""
    from liftloop.privacy_records import dpia_draft, records_of_processing
    from tools.cdp.contracts import ContractRegistry

    text = dpia_draft(records_of_processing(get_settings(), ContractRegistry.load()))
    output.write_out(text, to, "DPIA draft")


@privacy_app.command("retention")
def privacy_retention(
    apply: Annotated[bool, typer.Option("--apply", help="Delete now (default: count).")] = False,
    as_json: JsonOption = False,
) -> None:
    """What the retention job deletes (it runs on a schedule in the worker): rows and spans
    older than their category's limit."""
    from liftloop.audit import audit_log
    from liftloop.retention import apply_retention

    settings = get_settings()
    log = audit_log(settings)
    report = apply_retention(log.engine, settings, log, apply=apply, actor=client.actor())
    verb = "deleted" if apply else "would delete"
    human = "\n".join(
        f"{verb} {report.deleted[name]} {name} before {cutoff:%Y-%m-%d}"
        for name, cutoff in report.cutoffs.items()
    )
    output.emit(report.model_dump(mode="json"), as_json=as_json, human=human)


Person = Annotated[str, typer.Argument(help="Any id of the person: user id, e-mail, phone.")]


@privacy_app.command("why")
def privacy_why(person: Person, as_json: JsonOption = False) -> None:
    """Why the person got each of their messages: the decision (arm, propensity, policy),
    the variant (template, model, policy version, verdict) and the approval behind it."""
    from liftloop.db import engine_for
    from liftloop.redress import messages_of
    from tools.cdp.errors import UnknownIdentityError

    try:
        pid, messages = messages_of(engine_for(get_settings().cdp_url), person)
    except UnknownIdentityError as exc:
        output.fail_on(exc, as_json=as_json)
    rows = [
        (
            m.message_id,
            m.campaign_id,
            m.cycle,
            m.status,
            m.decision.arm if m.decision else "",
            f"{m.decision.propensity:.3f}" if m.decision else "",
            m.variant.policy_version or "" if m.variant else "",
            (m.approval.decided_by or m.approval.status) if m.approval else "",
        )
        for m in messages
    ]
    output.emit(
        {"profile_id": pid, "messages": [m.model_dump(mode="json") for m in messages]},
        as_json=as_json,
        human=output.table(
            "message",
            "campaign",
            "cycle",
            "status",
            "arm",
            "propensity",
            "policy",
            "approved by",
            rows=rows,
            title=f"messages of {pid}",
        ),
    )


@privacy_app.command("object")
def privacy_object(
    person: Person,
    reason: Annotated[str, typer.Option("--reason", help="The person's objection, in words.")],
    message: Annotated[
        str | None, typer.Option("--message", help="The message they object to.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """File the person's objection to direct marketing: honoured at once (marketing withdrawn
    on every channel), a review task in the approvals inbox, an audit entry."""
    from pydantic import ValidationError

    from liftloop.audit import audit_log
    from liftloop.redress import Objection, file_objection
    from tools.cdp.errors import UnknownIdentityError

    settings = get_settings()
    log = audit_log(settings)
    try:
        filed = file_objection(
            log.engine,
            log,
            person,
            Objection(reason=reason, message_id=message),
            actor=client.actor(),
        )
    except (UnknownIdentityError, ValidationError) as exc:
        output.fail_on(exc, as_json=as_json)
    output.emit(filed.model_dump(), as_json=as_json)
