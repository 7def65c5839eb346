"""Ids in the CLI's tables are never cut, folded or wrapped, also at 80 columns: they are
copied into the next command (`liftloop approvals approve ID`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from approvals.requests import ApprovalView
from liftloop.cli import app, output

runner = CliRunner()
LONG_ID = "apr-c-spring-sale-2026-eu-12-email-variant-3-abcdef"
CAMPAIGN = "c-spring-sale-2026-eu-12"
REASONS = ["discount 20% is above the campaign limit of 15%", "new template version 1.2.0"]


def _lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def test_approvals_list_at_80_columns_shows_the_whole_id(monkeypatch: pytest.MonkeyPatch) -> None:
    view = ApprovalView(
        request_id=LONG_ID,
        campaign_id=CAMPAIGN,
        cycle=12,
        variant_id="v-3",
        status="pending",
        reasons=REASONS,
        deadline_at=datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
    )

    def list_approvals(engine: Any, status: str | None = "pending", **_: Any) -> list[Any]:
        return [view]

    monkeypatch.setattr("approvals.requests.list_approvals", list_approvals)
    monkeypatch.setattr("liftloop.db.engine_for", lambda url: None)
    result = runner.invoke(app, ["approvals", "list"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    # Each id whole on one line (the campaign's is a part of the request's, so it is also
    # on the request's line).
    lines = result.stdout.splitlines()
    assert len(_lines_with(result.stdout, LONG_ID)) == 1, result.stdout
    assert any(CAMPAIGN in line and LONG_ID not in line for line in lines), result.stdout
    assert max(len(line) for line in lines) <= 80, result.stdout
    # Nothing else is lost either (the reasons may wrap).
    for reason in REASONS:
        assert reason in " ".join(result.stdout.split())


def test_a_wide_terminal_keeps_the_table_and_wraps_the_other_columns() -> None:
    rows = [(LONG_ID, CAMPAIGN, 12, "pending", "; ".join(REASONS) * 3)]
    console = Console(width=120, record=True)
    console.print(output.table("request", "campaign", "cycle", "status", "reasons", rows=rows))
    text = console.export_text()
    assert text.startswith("┏")  # still a table
    (line,) = _lines_with(text, LONG_ID)
    assert CAMPAIGN in line  # both ids whole on the row's first line
    assert max(len(line) for line in text.splitlines()) <= 120


@pytest.mark.parametrize("header", ["request", "campaign", "message", "profile_id", "trace id"])
def test_id_columns_are_known_by_name(header: str) -> None:
    assert output.is_id_column(header)


def test_other_columns_are_not_ids() -> None:
    assert not any(output.is_id_column(h) for h in ("reasons", "status", "cycle", "", "idle"))
