"""The planner against an OpenAI-compatible model over real HTTP (tests/openai_stub.py): the
requests carry the planner's tools and its `submit_spec` output tool, the model's tool call runs
over the seeded CDP, its spec is validated and waits for approval, and what the model reported
it used is what the cost ledger holds. Planned as the CLI plans (on the calling thread, no event
loop) and as the API plans (in a worker thread of a running event loop); either way the model's
HTTP client is closed after each request, in the loop that used it."""

from __future__ import annotations

import asyncio
import gc
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import SecretStr

from agents.planner import PlanResult
from agents.planner_tools import SUBMIT_SPEC, TOOLS
from liftloop.db import engine_for
from liftloop.loop.spec import parse_spec
from liftloop.planning import PlanDesk, plan_desk
from liftloop.settings import Settings
from tests.agents.planner_seed import seed_customers
from tests.spans import record_spans, spans_in
from tools.cdp.segments import count_segment
from tools.content.ledger import SqlCostLedger

if TYPE_CHECKING:
    from tests.openai_stub import OpenAIStub

MODEL = "gpt-stub"
PRICE_IN, PRICE_OUT = 1000.0, 2000.0  # EUR per million tokens
BRIEF = (
    "Win back lapsed customers in DE by email, at most 10 % discount. "
    "Tone: quietly confident, never pushy."
)
SEGMENT = {
    "all": [
        {"trait": "country", "eq": "DE"},
        {"event": "order_completed", "within": "90d", "count_eq": 0},
    ]
}
# What the model submits; the id is the model's guess, the caller's campaign id replaces it.
SPEC: dict[str, Any] = {
    "id": "whatever-the-model-chose",
    "goal": {"kpi": "contribution_margin", "attribution_window": "7d"},
    "audience": {"segment": SEGMENT, "consent": {"purpose": "marketing"}},
    "channels": ["email"],
    "offers": [{"id": "none", "discount_pct": 0}, {"id": "ten", "discount_pct": 10}],
    "limits": {
        "max_discount_pct": 10,
        "frequency_cap": {"per_week": 2},
        "quiet_hours": {"from": "21:00", "to": "08:00"},
    },
    "experiment": {
        "holdout_pct": 10,
        "policy": "thompson",
        "min_arm_share": 0.01,
        "primary_metric": "contribution_margin",
    },
    "content": {
        "generator": "copywriter",
        "template": "winback_email",
        "language": "de",
        "market": "DE",
        "brief": "quietly confident, never pushy",
    },
    "cadence": {"every": "1d", "max_cycles": 14},
    "stop": {"ship_when": "lift_ci_low_above_zero", "min_cycles": 3},
}


def _tool_call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"function": {"name": name, "arguments": arguments}}],
    }


def _model(body: dict[str, Any]) -> dict[str, Any]:
    """A model that sizes the audience first and, once the count is back, submits its spec."""
    if not any(m["role"] == "tool" for m in body["messages"]):
        return _tool_call("segment_count", {"segment": SEGMENT, "channels": ["email", "sms"]})
    return _tool_call(SUBMIT_SPEC, SPEC)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CDP of 400 customers with their order history."""
    directory = tmp_path_factory.mktemp("planner-http") / "data"
    seed_customers(engine_for(Settings(data_dir=directory).cdp_url), 400, batch="http")
    return directory


def _settings(data_dir: Path, stub: OpenAIStub) -> Settings:
    return Settings(
        data_dir=data_dir,
        llm_model=f"openai:{MODEL}",
        llm_base_url=stub.base_url,
        llm_api_key=SecretStr(stub.api_key),
        llm_prices_eur_per_mtok={MODEL: (PRICE_IN, PRICE_OUT)},
    )


def _plan_like_the_cli(settings: Settings, campaign_id: str) -> PlanResult:
    with plan_desk(settings) as desk:
        return desk.plan(BRIEF, campaign_id)


def _plan_like_the_api(settings: Settings, campaign_id: str) -> PlanResult:
    async def serve() -> PlanResult:
        desk = await asyncio.to_thread(PlanDesk, settings)
        try:
            return await asyncio.to_thread(desk.plan, BRIEF, campaign_id)
        finally:
            desk.close()

    return asyncio.run(serve())


@pytest.fixture
def earlier_garbage_collected() -> Iterator[None]:
    """What earlier tests left to the garbage collector (an event loop an `asyncio.run` left
    behind, say) is collected first and not held against this test."""
    hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        gc.collect()
    finally:
        sys.unraisablehook = hook
    yield


# An HTTP client (or an event loop) left open is closed by the garbage collector, in a loop
# that may be gone: a ResourceWarning, or "Event loop is closed" raised where nobody catches it.
@pytest.mark.filterwarnings("error::ResourceWarning")
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("plan", [_plan_like_the_cli, _plan_like_the_api], ids=["cli", "api"])
@pytest.mark.usefixtures("earlier_garbage_collected")
def test_the_planner_plans_with_a_model_over_http(
    plan: Any, data_dir: Path, openai_stub: OpenAIStub, tmp_path: Path
) -> None:
    settings = _settings(data_dir, openai_stub)
    campaign_id = f"http-{plan.__name__.removeprefix('_plan_like_the_')}"
    openai_stub.respond(_model)
    with record_spans(tmp_path / "spans.jsonl") as spans_file:
        result = plan(settings, campaign_id)
    gc.collect()  # a client nobody closed would be collected (and complain) here

    # Two requests: the tool call, then the spec. Each names the model and offers every tool
    # of the planner and the output tool; the second carries the tool's answer.
    bodies = [r.body for r in openai_stub.requests]
    assert len(bodies) == 2 and all(b["model"] == MODEL for b in bodies)
    for body in bodies:
        offered = {t["function"]["name"] for t in body["tools"]}
        assert offered == {*TOOLS, SUBMIT_SPEC}
    answers = [m for m in bodies[1]["messages"] if m["role"] == "tool"]
    assert len(answers) == 1
    assert json.loads(answers[0]["content"]) == result.evidence["audience"]

    # The spec the model submitted, validated, under the caller's campaign id, waiting.
    assert result.status == "awaiting_approval" and result.decision is None
    assert result.spec == {**SPEC, "id": campaign_id} and result.spec_attempts == 1
    assert parse_spec(result.spec).id == campaign_id
    assert [(c.tool, c.by, c.ok) for c in result.tool_calls] == [
        ("segment_count", "model", True),
        ("lint_spec", "graph", True),
    ]
    # The audience is the CDP's own count of the segment the model chose.
    engine = engine_for(settings.cdp_url)
    audience = result.evidence["audience"]
    assert audience["matched"] == count_segment(engine, SEGMENT) > 0
    assert 0 < audience["reachable"] <= audience["matched"]
    assert result.evidence["lint"]["decision"] in ("allow", "escalate", "block")

    # What the model reported it used is the plan's usage, and the ledger's, at its price.
    prompt, completion = openai_stub.prompt_tokens, openai_stub.completion_tokens
    assert prompt > 0 and completion > 0
    usage = result.usage
    assert (usage.model, usage.requests) == (MODEL, 2)
    assert (usage.input_tokens, usage.output_tokens) == (prompt, completion)
    cost = (prompt * PRICE_IN + completion * PRICE_OUT) / 1e6
    assert usage.cost_eur == pytest.approx(cost)
    costs = SqlCostLedger(engine).costs(campaign_id)
    assert [(line.job, line.model, line.requests) for line in costs.lines] == [("plan", MODEL, 2)]
    assert (costs.input_tokens, costs.output_tokens) == (prompt, completion)
    assert costs.cost_eur == pytest.approx(cost)

    # One GenAI span per request (the instrumented model's), inside the planner's step.
    spans = spans_in(spans_file)
    chats = [s for s in spans if s["name"].startswith("chat ")]
    assert [s["name"] for s in chats] == [f"chat {MODEL}"] * 2
    thinks = [s for s in spans if s["name"] == "planner.think"]
    assert [s["attributes"]["planner.step"] for s in thinks] == [1, 2]
    assert [c["parent_id"] for c in chats] == [t["context"]["span_id"] for t in thinks]
    assert sum(s["attributes"]["gen_ai.usage.input_tokens"] for s in chats) == prompt
    assert sum(s["attributes"]["gen_ai.usage.output_tokens"] for s in thinks) == completion
    # Neither the brief, nor what the model wrote, nor the key is in any attribute.
    attributes = str([s["attributes"] for s in spans])
    assert "quietly confident" not in attributes and "never pushy" not in attributes
    assert openai_stub.api_key not in attributes
