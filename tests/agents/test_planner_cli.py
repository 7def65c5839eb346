"""`liftloop plan`, `plan-status` and `plan-decide` in separate invocations, as after a
restart: the thread comes back from the data directory's SQLite file, and the plan's model
usage is in the cost ledger."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from liftloop.cli.plan import register
from liftloop.db import engine_for
from liftloop.loop.spec import load_spec
from liftloop.settings import get_settings
from tools.audit import timeline
from tools.content.ledger import SqlCostLedger

BRIEF = "Win back lapsed customers in DE, at most 15 % discount, budget 10,000 EUR"


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setenv("LIFTLOOP_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    app = typer.Typer()
    register(app)
    yield app
    get_settings.cache_clear()


def test_plan_status_and_decide(cli: typer.Typer, tmp_path: Path) -> None:
    runner = CliRunner()
    planned = runner.invoke(cli, ["plan", BRIEF, "--campaign-id", "wb", "--json"])
    assert planned.exit_code == 0, planned.output
    payload = json.loads(planned.stdout)
    assert payload["status"] == "awaiting_approval" and payload["spec"]["id"] == "wb"
    assert payload["thread_id"] == "plan-wb"
    assert [c["tool"] for c in payload["tool_calls"]][:2] == ["segment_count", "churn_summary"]

    again = runner.invoke(cli, ["plan", BRIEF, "--campaign-id", "wb", "--json"])
    assert again.exit_code == 2 and "already awaiting_approval" in json.loads(again.stdout)["error"]
    status = runner.invoke(cli, ["plan-status", "plan-wb"])
    assert status.exit_code == 0 and "status: awaiting_approval (thread plan-wb)" in status.stdout

    spec_file = tmp_path / "wb.yaml"
    decide = ["plan-decide", "plan-wb", "--approve", "--by", "mia", "--json"]
    decided = runner.invoke(cli, [*decide, "--spec-out", str(spec_file)])
    assert decided.exit_code == 0, decided.output
    assert json.loads(decided.stdout)["decision"]["approver"] == "mia"
    assert load_spec(spec_file).id == "wb"  # what `liftloop campaign start` reads

    twice = runner.invoke(cli, ["plan-decide", "plan-wb", "--reject", "--json"])
    assert twice.exit_code == 2 and "already approved" in json.loads(twice.stdout)["error"]
    unknown = runner.invoke(cli, ["plan-decide", "plan-nope", "--approve", "--json"])
    assert unknown.exit_code == 2 and json.loads(unknown.stdout)["error"].startswith("thread_id:")

    engine = engine_for(get_settings().cdp_url)
    costs = SqlCostLedger(engine).costs("wb")
    assert [(line.job, line.model) for line in costs.lines] == [("plan", "offline-planner")]
    assert costs.requests == payload["usage"]["requests"] > 0
    audited = [e for e in timeline(engine, campaign_id="wb") if e.kind == "plan.decide"]
    assert len(audited) == 1 and audited[0].details["approved"] is True


def test_decide_refuses_start_with_reject(cli: typer.Typer) -> None:
    result = CliRunner().invoke(cli, ["plan-decide", "plan-x", "--reject", "--start"])
    assert result.exit_code == 2 and "--start: only an approved plan" in result.stderr


def test_a_bad_brief_names_the_field(cli: typer.Typer) -> None:
    result = CliRunner().invoke(cli, ["plan", "   ", "--json"])
    assert result.exit_code == 2 and json.loads(result.stdout)["error"].startswith("brief:")


def test_decide_needs_the_decision(cli: typer.Typer) -> None:
    result = CliRunner().invoke(cli, ["plan-decide", "plan-x"])
    assert result.exit_code == 2 and "--approve/--reject: give the decision" in result.stderr
