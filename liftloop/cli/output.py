"""What every `liftloop` command prints: results, human tables and errors.

Results
    `emit(payload, as_json=..., human=...)`. With `--json` a command prints JSON on stdout, one
    object per line, and nothing else there (progress goes to stderr). Without it, `human` is
    printed: a string as it is, a rich renderable (a `table`, markup) through rich, or, when it
    is left out, the payload as `key: value` lines, a nested mapping indented one level.

Errors
    `fail(where, reason)` prints one line on stderr, `error: <where>: <reason>`, where `where`
    names the option, argument, field or input at fault, or the service that failed.
    `fail_on(exc)` does the same for the project's errors, which carry `field` and `reason` or
    read "<field>: <reason>". Under `--json` the error is also one JSON object on stdout,
    `{"error": "<where>: <reason>"}`, so that a script reading stdout always gets one object
    per line; with `split=True` (the CDP's commands, like its HTTP API) it also carries
    `"field"` and `"reason"` apart.

    Errors of the command line itself (unknown command or option, missing argument, a value
    of the wrong type) are printed by `usage_error`: one line naming what is wrong, then the
    hint `Try '<command> --help'.`. An exception that no command expected is one line naming
    it (`unexpected_error`); with LIFTLOOP_DEBUG=1 its traceback follows.

Exit codes
    0    success
    1    `FAILURE`, a runtime failure: a service does not start or cannot be reached, a check
         finds problems (`kb verify`, `policy lint`, `prompts eval`), an unexpected exception
    2    `USAGE`, a usage or input error: unknown command or option, a bad or missing value,
         an unreadable or invalid input file, an unknown id
    130  interrupted
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column, Table
from rich.text import Text

# Typer vendors click as `typer._click`; its exceptions are not the `click` package's.
from typer._click.exceptions import NoArgsIsHelpError, UsageError

FAILURE = 1
USAGE = 2
DEBUG_ENV = "LIFTLOOP_DEBUG"

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON on stdout, one object per line.")
]

_stdout = Console()
_stderr = Console(stderr=True)


def console(*, err: bool = False) -> Console:
    """The rich console of stdout, or of stderr (progress beside `--json` output)."""
    return _stderr if err else _stdout


def progress() -> Progress:
    """A progress display on stderr, so that it never mixes with a command's result on stdout
    (`--json` included). Live on a terminal; elsewhere (a pipe, a CI log) rich prints its last
    state once, when it stops. Stdout is not redirected into it: a write there stays there.
    The description comes last and wraps: a narrow terminal cuts neither it nor the time."""
    return Progress(
        SpinnerColumn(),
        BarColumn(bar_width=20),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}", table_column=Column(overflow="fold")),
        console=_stderr,
        redirect_stdout=False,
    )


def to_json(payload: Any) -> str:
    return json.dumps(payload, ensure_ascii=False, default=str)


def echo(text: str = "", *, err: bool = False) -> None:
    """One plain line: no markup, no wrapping."""
    typer.echo(text, err=err)


def show(renderable: RenderableType, *, err: bool = False) -> None:
    """A rich renderable, or a string with rich markup."""
    console(err=err).print(renderable)


# Columns of ids (a header of these words, or ending in " id" or "_id"): an id is copied into
# the next command, so it is never cut, folded or wrapped.
ID_COLUMNS = frozenset({"id", "request", "campaign", "message", "profile", "variant", "workflow"})
# The narrowest a column other than an id column is made before the table gives up being one.
_NARROWEST = 8


def is_id_column(header: str) -> bool:
    name = header.strip().lower()
    return name in ID_COLUMNS or name.endswith(("_id", " id"))


class _IdTable(Table):
    """A table whose id columns are never cut: the other columns wrap to make room, and when
    the ids and the other columns at `_NARROWEST` still do not fit the width, each row is
    printed as `header: value` lines instead (rich would cut the ids as a last resort)."""

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self._fits(console, options):
            yield from super().__rich_console__(console, options)
            return
        if self.title:
            yield Text.from_markup(str(self.title), style="table.title")
        for n, row in enumerate(zip(*(c.cells for c in self.columns), strict=True)):
            if n:
                yield Text()
            for column, cell in zip(self.columns, row, strict=True):
                value = Text.from_markup(str(cell))
                header = str(column.header) if self.show_header else ""
                line = Text.assemble((f"{header}: ", "bold"), value) if header else value
                if column.no_wrap:
                    line.no_wrap, line.overflow = True, "ignore"
                yield line

    def _fits(self, console: Console, options: ConsoleOptions) -> bool:
        need = self._extra_width
        for index, column in enumerate(self.columns):
            cells = [column.header, *column.cells] if self.show_header else [*column.cells]
            widest = max((Measurement.get(console, options, c).maximum for c in cells), default=0)
            widest = widest if column.no_wrap else min(widest, _NARROWEST)
            need += widest + self._get_padding_width(index)
        return need <= options.max_width


def table(
    *columns: str,
    rows: Iterable[Iterable[Any]],
    title: str | None = None,
    show_header: bool = True,
) -> Table:
    """A human table; cells may hold rich markup. Id columns (`is_id_column`) are shown
    whole; the other columns wrap."""
    ids = [is_id_column(c) for c in columns] if show_header else []
    if not any(ids):
        result = Table(*columns, title=title, show_header=show_header)
    else:
        result = _IdTable(title=title, show_header=show_header)
        for header, is_id in zip(columns, ids, strict=True):
            result.add_column(header, no_wrap=is_id, overflow="ignore" if is_id else "fold")
    for row in rows:
        result.add_row(*(str(cell) for cell in row))
    return result


def emit(payload: Mapping[str, Any], *, as_json: bool, human: RenderableType | None = None) -> None:
    """A command's result: one JSON object with `--json`, else `human` or `key: value` lines."""
    if as_json:
        echo(to_json(payload))
    elif human is None:
        for key, value in payload.items():
            if isinstance(value, Mapping):
                echo(f"{key}:")
                for sub, inner in value.items():
                    echo(f"  {sub}: {inner}")
            else:
                echo(f"{key}: {value}")
    elif isinstance(human, str):
        if human:  # an empty listing prints nothing
            echo(human)
    else:
        show(human)


OutputOption = Annotated[
    Path | None, typer.Option("--output", "-o", dir_okay=False, help="File (default stdout).")
]


def write_out(text: str, to: Path | None, what: str) -> None:
    """A document to stdout, or to the file `to` (`what` it was, said on stderr)."""
    if to is None:
        echo(text.rstrip("\n"))
        return
    try:
        to.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail("--output", f"cannot write {to.name} ({exc.strerror})")
    echo(f"{what} written to {to.name}", err=True)


def fail(
    where: str | None,
    reason: str,
    *,
    as_json: bool = False,
    split: bool = False,
    code: int = USAGE,
) -> NoReturn:
    """Stop the command: `error: <where>: <reason>` on stderr, exit `code`."""
    message = f"{where}: {reason}" if where else reason
    if as_json:
        extra = {"field": where, "reason": reason} if split else {}
        echo(to_json({"error": message, **extra}))
    echo(f"{typer.style('error:', fg='red')} {message.rstrip()}", err=True)
    raise typer.Exit(code)


def describe(exc: BaseException) -> tuple[str | None, str]:
    """(field, reason) of an error: its attributes, else its message read as "<field>: ..."."""
    field, reason = getattr(exc, "field", None), getattr(exc, "reason", None)
    if isinstance(field, str) and isinstance(reason, str):
        return field, reason
    if isinstance(exc, ValidationError):
        return None, "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in exc.errors()
        )
    return None, str(exc)


def fail_on(
    exc: BaseException, *, as_json: bool = False, split: bool = False, code: int = USAGE
) -> NoReturn:
    """`fail` with the field and reason an exception names."""
    where, reason = describe(exc)
    fail(where, reason, as_json=as_json, split=split, code=code)


def usage_error(exc: typer.TyperException) -> int:
    """Print an error of the command line (click's exceptions); returns the exit code."""
    if isinstance(exc, NoArgsIsHelpError):
        # A group called without a command: rich help is printed (on stdout) as the error is
        # made, plain help is the error's message.
        if exc.format_message().strip():
            exc.show()
        return exc.exit_code
    message = " ".join(exc.format_message().split())
    echo(f"{typer.style('error:', fg='red')} {message}", err=True)
    if isinstance(exc, UsageError) and exc.ctx is not None:
        help_option = exc.ctx.help_option_names[0] if exc.ctx.help_option_names else "--help"
        echo(f"Try '{exc.ctx.command_path} {help_option}'.", err=True)
    return int(getattr(exc, "exit_code", USAGE))


def unexpected_error(exc: BaseException, *, always_traceback: bool = False) -> int:
    """An exception no command expected: one line (and the traceback when debugging)."""
    debug = always_traceback or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    detail = " ".join(str(exc).split()) or "(no message)"
    hint = "" if debug else f" (set {DEBUG_ENV}=1 for the traceback)"
    echo(f"{typer.style('error:', fg='red')} {type(exc).__name__}: {detail}{hint}", err=True)
    return FAILURE
