"""The `liftloop` command line.

Each command-group module exposes `app`, a Typer holding its commands and named groups, and
`register(root)`, which adds it to a root Typer (this one, or a test's). `output` is the one
place that prints results and errors; its docstring has the conventions and exit codes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer.core import TyperGroup, TyperOption
from typer.main import get_command

from liftloop.cli import (
    approvals,
    audit,
    campaign,
    cdp,
    knowledge,
    measure,
    models,
    output,
    plan,
    policies,
    privacy,
    system,
    traces,
    users,
)
from liftloop.credentials import InsecureSettingError, set_private_umask


class RootGroup(TyperGroup):
    """The root command: every error, of any command or nested group, is one line and an exit
    code, whether the CLI runs from `main`, `python -m liftloop.cli` or a test's CliRunner.

    The tree runs non-standalone and `output` prints what went wrong. (The old `main` did this
    with `except click.ClickException`, but typer vendors click as `typer._click`: nothing
    matched, and every usage error fell through to a printed traceback.)
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        _hide_flag_types(self)
        try:
            result = super().main(
                args,
                prog_name,
                complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **extra,
            )
            # Non-standalone, click returns the code of a `typer.Exit`; commands return None.
            code = result if isinstance(result, int) and not isinstance(result, bool) else 0
        except typer.TyperException as exc:
            code = output.usage_error(exc)
        except typer.Abort:
            output.echo("Aborted!", err=True)
            code = output.FAILURE
        except InsecureSettingError as exc:  # a public key value, or an unusable key file
            output.echo(f"{typer.style('error:', fg='red')} {exc}", err=True)
            code = output.USAGE
        except Exception as exc:
            code = output.unexpected_error(exc)
        if standalone_mode:
            sys.exit(code)
        return code


def _hide_flag_types(command: Any) -> None:
    """No `<bool>` beside flags: typer's rich help prints a type for every option, a flag too,
    unless it has a metavar. Flags take no value, so theirs is empty (the help option too)."""
    ctx = typer.Context(command, **(command.context_settings or {}))
    params = [*command.params, command.get_help_option(ctx)]
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _hide_flag_types(sub)


app = typer.Typer(
    cls=RootGroup,
    help="liftloop: durable campaign loops that prove lift against a holdout.",
    no_args_is_help=True,
)
for _module in (
    system,
    campaign,
    approvals,
    audit,
    cdp,
    knowledge,
    measure,
    models,
    plan,
    policies,
    privacy,
    traces,
    users,
):
    _module.register(app)


def main() -> None:
    """The console script. Exits through os._exit after flushing: the Temporal client's threads
    occasionally crash an orderly interpreter shutdown, which must not turn a finished command
    into a failure. Every file the command and the services it starts create is private to the
    user (umask 0o077): the data directory holds personal data and keys."""
    set_private_umask()
    try:
        code = get_command(app).main(standalone_mode=False)
    except SystemExit as exc:  # click's own exits, e.g. a broken pipe
        code = exc.code if isinstance(exc.code, int) else output.FAILURE
    except KeyboardInterrupt:
        code = 130
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
