"""`liftloop kb ingest` shows that it works on stderr; `--json` output stays one JSON object."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from tests.content.conftest import SAMPLE_KNOWLEDGE


def test_json_stays_on_stdout_and_progress_goes_to_stderr(cli: typer.Typer) -> None:
    result = CliRunner().invoke(cli, ["kb", "ingest", str(SAMPLE_KNOWLEDGE), "--json"])
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    report = json.loads(line)
    assert f"ingested {report['documents']} documents, {report['chunks']} chunks" in result.stderr
