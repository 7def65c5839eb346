"""`liftloop users add|token|list|disable|password`: the people who use liftloop and their
roles. Run by whoever administers the installation (it writes the database directly)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from liftloop.cli import output
from liftloop.cli.output import JsonOption
from liftloop.settings import get_settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

app = typer.Typer(name="users", help="Users, roles and personal tokens.", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="The user's name (a-z, 0-9, '.', '_', '-').")]
PasswordFile = Annotated[
    Path | None,
    typer.Option(
        "--password-file", help="A file whose first line is the password (for the web app)."
    ),
]


def register(root: typer.Typer) -> None:
    """Add the `users` group to `root`."""
    root.add_typer(app)


def _engine() -> Engine:
    from liftloop.db import engine_for

    return engine_for(get_settings().cdp_url)


def _password(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        output.fail("--password-file", f"cannot read {path.name} ({type(exc).__name__})")
    return lines[0] if lines else ""


@app.command("add")
def users_add(
    name: NameArg,
    role: Annotated[str, typer.Option("--role", help="manager, approver, auditor or admin.")],
    email: Annotated[str | None, typer.Option("--email", help="Their e-mail address.")] = None,
    slack_id: Annotated[
        str | None, typer.Option("--slack-id", help="Their Slack user id (U…), for Slack.")
    ] = None,
    group: Annotated[
        list[str] | None,
        typer.Option("--group", help="An approver group they answer for (repeatable)."),
    ] = None,
    password_file: PasswordFile = None,
    as_json: JsonOption = False,
) -> None:
    """Add a user."""
    from liftloop.accounts.users import AccountError, add_user

    try:
        user = add_user(
            _engine(),
            name,
            role,
            email=email,
            slack_id=slack_id,
            groups=group,
            password=_password(password_file),
        )
    except AccountError as exc:
        output.fail_on(exc, as_json=as_json)
    output.emit(user.model_dump(), as_json=as_json, human=f"added {user.name} ({user.role})")


@app.command("token")
def users_token(name: NameArg) -> None:
    """Print a new personal API token for the user (shown once; keep it secret)."""
    from liftloop.accounts.tokens import issue_token
    from liftloop.accounts.users import AccountError

    try:
        output.echo(issue_token(_engine(), name))
    except AccountError as exc:
        output.fail_on(exc)


@app.command("password")
def users_password(name: NameArg, password_file: PasswordFile = None) -> None:
    """Set the user's password for the web app."""
    from liftloop.accounts.users import AccountError, set_password

    if password_file is None:
        output.fail("--password-file", "is required")
    try:
        set_password(_engine(), name, _password(password_file) or "")
    except AccountError as exc:
        output.fail_on(exc)
    output.show(f"password of {name} set")


@app.command("disable")
def users_disable(name: NameArg) -> None:
    """Disable a user: their tokens and web sessions stop working at once."""
    from liftloop.accounts.tokens import revoke_tokens
    from liftloop.accounts.users import AccountError, disable_user

    engine = _engine()
    try:
        disable_user(engine, name)
    except AccountError as exc:
        output.fail_on(exc)
    output.show(f"{name} disabled; {revoke_tokens(engine, name)} token(s) revoked")


@app.command("list")
def users_list(as_json: JsonOption = False) -> None:
    """List the users and their roles."""
    from liftloop.accounts.users import list_users

    users = list_users(_engine())
    rows = [
        (
            u.name,
            u.role,
            ",".join(u.groups) or "-",
            u.slack_id or "-",
            "yes" if u.has_password else "no",
            "disabled" if u.disabled else "active",
        )
        for u in users
    ]
    output.emit(
        {"users": [u.model_dump() for u in users]},
        as_json=as_json,
        human=output.table("name", "role", "groups", "slack", "password", "state", rows=rows),
    )
