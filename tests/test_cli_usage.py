"""Usage errors of every `liftloop` command: one line and a hint on stderr, exit 2, no traceback.

The command tree is walked, so a command added later is covered without touching this file."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.core import TyperArgument, TyperGroup
from typer.testing import CliRunner

from liftloop.cli import app

runner = CliRunner()


def _walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    if isinstance(command, TyperGroup):
        for name, sub in command.commands.items():
            yield from _walk(sub, (*path, name))


COMMANDS = list(_walk(typer.main.get_command(app)))
LEAVES = [(p, c) for p, c in COMMANDS if not isinstance(c, TyperGroup)]
NEEDS_INPUT = [
    (p, c) for p, c in LEAVES if any(param.required for param in c.params if param.expose_value)
]
REQUIRED_ARGUMENTS = [
    (p, c) for p, c in LEAVES if any(isinstance(a, TyperArgument) and a.required for a in c.params)
]


def _name(path: tuple[str, ...]) -> str:
    return " ".join(path) or "liftloop"


def _usage_error(args: list[str], command: tuple[str, ...]) -> str:
    """Invoke; check exit 2, no traceback and the two-line error; return the error line."""
    result = runner.invoke(app, args, prog_name="liftloop")
    assert result.exit_code == 2, (args, result.output)
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("error: ") and len(lines[0]) < 200, lines[0]
    assert lines[1] == f"Try '{' '.join(['liftloop', *command])} --help'.", lines
    return lines[0]


def test_the_tree_is_walked() -> None:
    names = {_name(p) for p, _ in COMMANDS}
    assert {"campaign start", "kb search", "serve", "demo", "policy diff"} <= names
    assert len(LEAVES) > 40 and REQUIRED_ARGUMENTS


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[_name(p) for p, _ in COMMANDS])
def test_unknown_option(path: tuple[str, ...], command: Any) -> None:
    line = _usage_error([*path, "--no-such-option"], path)
    assert "--no-such-option" in line


@pytest.mark.parametrize(("path", "command"), NEEDS_INPUT, ids=[_name(p) for p, _ in NEEDS_INPUT])
def test_missing_required_input(path: tuple[str, ...], command: Any) -> None:
    line = _usage_error([*path], path)
    first = next(p for p in command.params if p.required and p.expose_value)
    assert line.startswith("error: Missing ")
    assert any(f"'{n}'" in line for n in (first.name, first.metavar, *first.opts) if n), line


@pytest.mark.parametrize(
    ("path", "command"), REQUIRED_ARGUMENTS, ids=[_name(p) for p, _ in REQUIRED_ARGUMENTS]
)
def test_missing_argument_names_it(path: tuple[str, ...], command: Any) -> None:
    # Every required option given a placeholder, so the argument is what is missing.
    args: list[str] = [*path]
    for param in command.params:
        if param.required and not isinstance(param, TyperArgument):
            args += [param.opts[0], "1"]
    line = _usage_error(args, path)
    assert line.startswith("error: Missing argument")


@pytest.mark.parametrize("args", [["nosuch"], ["campaign", "nosuch"], ["kb", "serch"]])
def test_unknown_command(args: list[str]) -> None:
    line = _usage_error(args, tuple(args[:-1]))
    assert f"No such command '{args[-1]}'" in line


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["demo", "--profiles", "abc"], "--profiles"),
        (["demo", "--cycles", "0"], "--cycles"),
        (["demo", "--policy", "greedy"], "--policy"),
        (["kb", "search", "jackets", "--k", "many"], "--k"),
        (["experiment", "power", "--baseline", "abc", "--mde", "0.1"], "--baseline"),
        (["segment", "count", "x.yaml", "--as-of", "yesterday"], "--as-of"),
        (["serve", "nosuch"], "service"),
    ],
)
def test_bad_value_names_the_option(args: list[str], option: str) -> None:
    result = runner.invoke(app, args, prog_name="liftloop")
    assert result.exit_code == 2 and "Traceback" not in result.output
    first, second = result.stderr.splitlines()
    assert first.startswith("error: Invalid value for") and option in first
    assert second.startswith("Try 'liftloop ") and second.endswith(" --help'.")


def test_a_directory_as_spec_file_is_a_usage_error(tmp_path: Path) -> None:
    line = _usage_error(["campaign", "start", str(tmp_path)], ("campaign", "start"))
    assert "is a directory" in line


def test_a_missing_spec_file_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["campaign", "start", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert result.stderr == "error: invalid spec nope.yaml: file not found\n"


def test_a_group_without_a_command_shows_its_help() -> None:
    result = runner.invoke(app, ["campaign"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "Start and control campaigns." in result.stdout and result.stderr == ""


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[_name(p) for p, _ in COMMANDS])
def test_help_shows_no_bool_type(path: tuple[str, ...], command: Any) -> None:
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "--help" in result.stdout and "<bool>" not in result.stdout


def test_an_unexpected_exception_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(settings: Any) -> Any:
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr("liftloop.runtime.status", broken)
    monkeypatch.delenv("LIFTLOOP_DEBUG", raising=False)
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 1
    assert result.stderr == (
        "error: RuntimeError: disk on fire second line (set LIFTLOOP_DEBUG=1 for the traceback)\n"
    )
    debug = runner.invoke(app, ["status"], env={"LIFTLOOP_DEBUG": "1"})
    assert debug.exit_code == 1
    assert debug.stderr.startswith("Traceback") and "RuntimeError: disk on fire" in debug.stderr


def test_the_module_entry_point_prints_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if k != "LIFTLOOP_DEBUG"}
    result = subprocess.run(
        [sys.executable, "-m", "liftloop.cli", "campaign", "start"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: Missing argument 'spec_file'.",
        "Try 'python -m liftloop.cli campaign start --help'.",
    ]
