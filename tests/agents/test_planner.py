from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from langgraph.checkpoint.memory import InMemorySaver
from typer.testing import CliRunner

from agents.planner import (
    ApprovalDecision,
    PlannerTools,
    PlanningError,
    build_planner,
    even_split,
    parse_brief,
    plan_status,
    resume_plan,
    start_plan,
)
from liftloop.cli.knowledge import register
from liftloop.loop.spec import load_spec, parse_spec
from liftloop.settings import get_settings

BRIEF = "Win back lapsed customers in DE, at most 15 % discount, budget 10,000 EUR"


def test_brief_is_read_into_typed_fields() -> None:
    parsed = parse_brief(BRIEF + " via email and push. Tone: calm and practical.")
    assert parsed.goal == "winback" and parsed.market == "DE" and parsed.language == "de"
    assert parsed.max_discount_pct == 15 and parsed.budget_eur == 10_000
    assert parsed.channels == ("email", "push") and parsed.tone == "calm and practical"
    plain = parse_brief("Promote the new fleece jackets")
    assert plain.goal == "promotion" and plain.market is None and plain.budget_eur is None
    with pytest.raises(PlanningError, match=r"^brief:"):
        parse_brief("  ")


def test_planner_calls_tools_and_waits_for_approval() -> None:
    seen: dict[str, Any] = {}

    def segment_count(segment: dict[str, Any]) -> int:
        seen["segment"] = segment
        return 4200

    def allocate(
        budget: float, channels: tuple[str, ...], audience: int | None
    ) -> dict[str, float]:
        seen["allocate"] = (budget, channels, audience)
        return {"email": budget}

    tools = PlannerTools(
        segment_count=segment_count,
        churn_summary=lambda s: {"mean_churn_probability": 0.62},
        knowledge_search=lambda q, m, lang: [{"doc_id": "brand-guidelines-de"}],
        allocate=allocate,
    )
    graph = build_planner(tools, InMemorySaver())
    plan = start_plan(graph, BRIEF, "winback-de-2026w48")
    assert plan.status == "awaiting_approval" and plan.decision is None
    assert [c.tool for c in plan.tool_calls] == [
        "segment_count",
        "churn_summary",
        "clv_summary",
        "knowledge_search",
        "allocate",
    ]
    assert {"trait": "country", "eq": "DE"} in seen["segment"]["all"]
    assert seen["allocate"] == (10_000.0, ("email",), 4200)
    spec = plan.spec
    assert spec["id"] == "winback-de-2026w48"
    assert spec["limits"]["max_discount_pct"] == 15
    assert max(o["discount_pct"] for o in spec["offers"]) == 15
    assert spec["content"] == {
        "template": "winback_email",
        "language": "de",
        "brief": "warm, no pressure",
    }
    assert parse_spec(spec).arms[0][0] == "none@email"
    assert plan.evidence["budget_by_channel_eur"] == {"email": 10_000.0}
    assert plan.evidence["estimated_audience"] == 4200
    assert plan.evidence["knowledge"] == ["brand-guidelines-de"]

    done = resume_plan(graph, plan.thread_id, ApprovalDecision(approved=True, approver="mia"))
    assert done.status == "approved" and done.decision is not None
    assert done.decision.approver == "mia" and done.spec == spec


def test_rejection_is_recorded() -> None:
    graph = build_planner(PlannerTools())
    plan = start_plan(graph, "Retention push for AT, up to 10 % off", "retain-at")
    assert plan.spec["channels"] == ["push"] and plan.spec["content"]["template"] == "promo_push"
    done = resume_plan(graph, plan.thread_id, ApprovalDecision(approved=False, comment="too early"))
    assert done.status == "rejected"


def test_even_split_placeholder_allocator() -> None:
    assert even_split(9000, ("email", "push", "sms"), None) == {
        "email": 3000.0,
        "push": 3000.0,
        "sms": 3000.0,
    }


def test_plan_command_prints_the_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFTLOOP_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    try:
        result = runner.invoke(app, ["plan", BRIEF, "--campaign-id", "wb", "--json"])
        # A separate invocation, as after a restart: the thread comes back from the SQLite file.
        spec_file = tmp_path / "wb.yaml"
        decide = ["plan-decide", "plan-wb", "--approve", "--by", "mia", "--json"]
        decided = runner.invoke(app, [*decide, "--spec-out", str(spec_file)])
        twice = runner.invoke(app, ["plan-decide", "plan-wb", "--reject", "--json"])
        unknown = runner.invoke(app, ["plan-decide", "plan-nope", "--approve", "--json"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.stdout
    payload = json.loads(result.stdout)
    assert payload["status"] == "awaiting_approval" and payload["spec"]["id"] == "wb"
    assert decided.exit_code == 0, decided.stdout
    assert json.loads(decided.stdout)["decision"]["approver"] == "mia"
    assert load_spec(spec_file).id == "wb"  # what `liftloop campaign start` reads
    assert twice.exit_code == 2 and "already approved" in json.loads(twice.stdout)["error"]
    assert unknown.exit_code == 2 and json.loads(unknown.stdout)["error"].startswith("thread_id:")


def test_sqlite_checkpointer_survives_a_new_saver(tmp_path: Path) -> None:
    from agents.checkpoint import SQLiteFileSaver

    first = build_planner(PlannerTools(), SQLiteFileSaver(tmp_path / "planner.sqlite"))
    plan = start_plan(first, BRIEF, "wb-restart")
    second = build_planner(PlannerTools(), SQLiteFileSaver(tmp_path / "planner.sqlite"))
    assert plan_status(second, plan.thread_id).spec == plan.spec
    done = resume_plan(second, plan.thread_id, ApprovalDecision(approved=False))
    assert done.status == "rejected"
