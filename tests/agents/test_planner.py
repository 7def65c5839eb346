"""The planner graph: the scripted model chooses real tool calls over a seeded CDP, invalid specs
are fed back and corrected, a crash resumes from the checkpoint without running completed tool
calls again, and the approval interrupt is answered once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.instrumented import InstrumentedModel

from agents.checkpoint import SQLiteFileSaver
from agents.planner import (
    ApprovalDecision,
    PlanConflict,
    PlanFailed,
    PlannerModel,
    PlanningError,
    PlanNotFound,
    build_planner,
    plan_status,
    resume_plan,
    start_plan,
)
from agents.planner_model import (
    SCRIPTED_MODEL_NAME,
    parse_brief,
    scripted_planner_model,
    scripted_response,
)
from agents.planner_tools import SUBMIT_SPEC, PlannerTools
from liftloop.db import engine_for
from liftloop.knowledge import KNOWLEDGE_SEED, open_knowledge
from liftloop.loop.spec import parse_spec
from liftloop.planning import planner_model, planner_tools
from liftloop.settings import Settings
from tests.agents.planner_seed import seed_customers, seed_decision_log
from tests.spans import record_spans, spans_in
from tools.cdp.segments import count_segment

BRIEF = (
    "Win back lapsed customers in DE via email and sms, at most 15 % discount, "
    "budget 2,000 EUR. Tone: calm and practical."
)
SCRIPTED = PlannerModel(scripted_planner_model, SCRIPTED_MODEL_NAME)
MODEL_ORDER = [
    "segment_count",
    "churn_summary",
    "clv_summary",
    "knowledge_search",
    "allocate",
    "lint_spec",
]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A data directory with a CDP of 1,500 customers and their orders, the bundled brand
    knowledge, and a decision log in which e-mail raised orders and SMS lowered them."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("planner") / "data")
    engine = engine_for(settings.cdp_url)
    ids = seed_customers(engine, 1500, batch="pl")
    seed_decision_log(engine, ids, campaign_id="history", margin={"email": 0.06, "sms": -0.05})
    open_knowledge(settings).ingest([KNOWLEDGE_SEED])
    return settings


def test_brief_is_read_into_typed_fields() -> None:
    parsed = parse_brief(BRIEF)
    assert parsed.goal == "winback" and parsed.market == "DE" and parsed.language == "de"
    assert parsed.max_discount_pct == 15 and parsed.budget_eur == 2_000
    assert parsed.channels == ("email", "sms") and parsed.tone == "calm and practical"
    plain = parse_brief("Promote the new fleece jackets")
    assert plain.goal == "promotion" and plain.market is None and plain.budget_eur is None


def test_the_scripted_model_plans_with_real_tools(seeded: Settings, tmp_path: Path) -> None:
    planner = build_planner(planner_tools(seeded), planner_model(seeded), InMemorySaver())
    with record_spans(tmp_path / "spans.jsonl") as spans_file:
        plan = start_plan(planner, BRIEF, "winback-de")
    assert plan.status == "awaiting_approval" and plan.decision is None
    by_model = [c.tool for c in plan.tool_calls if c.by == "model"]
    assert by_model == MODEL_ORDER, by_model
    assert [c.tool for c in plan.tool_calls if c.by == "graph"] == ["lint_spec"]
    assert all(c.ok for c in plan.tool_calls)

    # The audience is the CDP's own count of the segment the model chose.
    segment = plan.tool_calls[0].args["segment"]
    audience = plan.evidence["audience"]
    assert audience["matched"] == count_segment(engine_for(seeded.cdp_url), segment) > 0
    assert 0 < audience["reachable_by_channel"]["sms"] < audience["reachable"]
    assert audience["reachable"] <= audience["matched"]

    # Churn and CLV come from a BG/NBD model fitted on the CDP's orders (nothing promoted).
    churn, clv = plan.evidence["churn"], plan.evidence["clv"]
    assert churn["model"].startswith("fitted on the CDP's order history")
    assert 0 < churn["churn_probability"]["mean"] < 1 and churn["scored_buyers"] > 0
    assert clv["clv_eur"]["mean"] > 0 and clv["total_clv_eur"] > clv["clv_eur"]["p90"]

    # E-mail raised orders in the decision log and SMS lowered them: the allocator funds e-mail
    # up to its reachable audience and gives SMS nothing, unlike an even split of the budget.
    allocation = plan.evidence["allocation"]
    spend = {c: a["spend_eur"] for c, a in allocation["allocations"].items()}
    assert spend["sms"] == 0 and spend["email"] > 0
    assert spend != {"email": 1_000.0, "sms": 1_000.0}
    email = allocation["inputs"]["email"]
    assert spend["email"] == pytest.approx(email["reachable"] * 14 * 0.002, abs=0.01)
    assert email["margin_per_message_eur"] > allocation["inputs"]["sms"]["margin_per_message_eur"]
    # … and the model read it: the spec drops the channel the budget does not fund.
    assert plan.spec["channels"] == ["email"]

    assert plan.evidence["knowledge"] and all(plan.evidence["knowledge"])
    assert plan.evidence["lint"]["decision"] == "allow"
    assert plan.evidence["lint"]["policy_version"].startswith("default-de@")
    spec = parse_spec(plan.spec)
    assert spec.id == "winback-de" and spec.content.market == "DE"
    assert spec.content.language == "de" and spec.limits.max_discount_pct == 15
    assert max(o.discount_pct for o in spec.offers) == 15 and spec.arms[0][0] == "none@email"
    assert plan.usage.model == SCRIPTED_MODEL_NAME and plan.usage.requests == 6
    assert plan.usage.input_tokens > 0 and plan.usage.output_tokens > 0

    spans = spans_in(spans_file)
    # One GenAI `chat` span per model request (the instrumented model's), each inside the
    # planner's own `planner.think` step.
    chats = [s for s in spans if s["name"].startswith("chat ")]
    assert [s["name"] for s in chats] == [f"chat {SCRIPTED_MODEL_NAME}"] * 6
    assert all(s["attributes"]["gen_ai.operation.name"] == "chat" for s in chats)
    assert sum(s["attributes"]["gen_ai.usage.input_tokens"] for s in chats) == (
        plan.usage.input_tokens
    )
    thinks = [s for s in spans if s["name"] == "planner.think"]
    assert [s["attributes"]["planner.step"] for s in thinks] == [1, 2, 3, 4, 5, 6]
    assert {c["parent_id"] for c in chats} == {t["context"]["span_id"] for t in thinks}
    assert not any("gen_ai.operation.name" in s["attributes"] for s in thinks)
    assert sum(s["attributes"]["gen_ai.usage.output_tokens"] for s in thinks) == (
        plan.usage.output_tokens
    )
    tools = [s for s in spans if s["name"].startswith("planner.tool ")]
    assert [s["attributes"]["gen_ai.tool.name"] for s in tools] == [*MODEL_ORDER, "lint_spec"]
    assert tools[0]["attributes"]["planner.tool.arg_keys"] == ["channels", "segment"]
    assert all(s["attributes"]["planner.tool.result_bytes"] > 0 for s in tools)
    # Nothing of the brief, nor a profile id, in any attribute.
    attributes = str([s["attributes"] for s in spans])
    assert "calm and practical" not in attributes and "pl-" not in attributes


def _bad_first(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """The scripted model, except that its first spec has an unknown channel and a discount
    of 150 %; it corrects both when the errors come back."""
    response = scripted_response(messages)
    submitted = [p for p in response.parts if isinstance(p, ToolCallPart)]
    if submitted and submitted[0].tool_name == SUBMIT_SPEC and _errors_seen(messages) == 0:
        bad = submitted[0].args_as_dict()
        bad["channels"] = ["fax"]
        bad["offers"] = [{"id": "none", "discount_pct": 0}, {"id": "huge", "discount_pct": 150}]
        return ModelResponse(parts=[ToolCallPart(SUBMIT_SPEC, bad, tool_call_id="bad-spec")])
    return response


def _errors_seen(messages: list[ModelMessage]) -> int:
    return sum(
        1
        for m in messages
        if isinstance(m, ModelRequest)
        for p in m.parts
        if getattr(p, "tool_name", None) == SUBMIT_SPEC and getattr(p, "outcome", "") == "retried"
    )


def test_an_invalid_spec_is_fed_back_and_corrected() -> None:
    seen: list[Any] = []

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        seen.append(messages[-1])
        return _bad_first(messages, info)

    planner = build_planner(PlannerTools(), PlannerModel(lambda: FunctionModel(model), "bad"))
    plan = start_plan(planner, BRIEF, "corrected")
    assert plan.status == "awaiting_approval" and plan.spec_attempts == 2
    feedback = next(
        p
        for m in seen
        if isinstance(m, ModelRequest)
        for p in m.parts
        if isinstance(p, ToolReturnPart) and p.tool_name == SUBMIT_SPEC
    )
    assert feedback.outcome == "retried" and feedback.tool_call_id == "bad-spec"
    fields = {e["field"] for e in feedback.content["errors"]}
    assert {"channels.0", "offers.1.discount_pct"} <= fields
    assert parse_spec(plan.spec).channels == ["email", "sms"]


def test_spec_attempts_are_bounded() -> None:
    def stubborn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        spec = {"id": "x", "channels": ["fax"], "offers": []}
        return ModelResponse(parts=[ToolCallPart(SUBMIT_SPEC, spec)])

    planner = build_planner(
        PlannerTools(), PlannerModel(lambda: FunctionModel(stubborn), "stubborn"), InMemorySaver()
    )
    with pytest.raises(PlanFailed, match=r"^spec: the spec was still invalid after 3 attempts"):
        start_plan(planner, BRIEF, "stubborn")
    failed = plan_status(planner, "plan-stubborn")
    assert failed.status == "failed" and failed.usage.requests == 3
    with pytest.raises(PlanConflict, match="failed, not awaiting approval"):
        resume_plan(planner, "plan-stubborn", ApprovalDecision(approved=True))


def test_a_bad_tool_argument_is_answered_not_raised(tmp_path: Path) -> None:
    def sloppy(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if len(messages) == 1:
            call = ToolCallPart("segment_count", {"segment": {}, "channels": ["fax"], "x": 1})
            broken = ToolCallPart("clv_summary", '{"segment": {')
            return ModelResponse(parts=[call, ToolCallPart("no_such_tool", {}), broken])
        return scripted_response(messages)

    planner = build_planner(PlannerTools(), PlannerModel(lambda: FunctionModel(sloppy), "sloppy"))
    with record_spans(tmp_path / "spans.jsonl") as spans_file:
        plan = start_plan(planner, BRIEF, "sloppy")
    first, second, third = plan.tool_calls[:3]
    assert not first.ok and "channels.0" in first.result["error"] and "x:" in first.result["error"]
    assert not second.ok and "unknown tool 'no_such_tool'" in second.result["error"]
    assert not third.ok and third.result["error"] == "the arguments are not a JSON object"
    assert plan.status == "awaiting_approval"
    # What the model invented (a tool name, an argument key) stays out of the spans.
    names = [s["name"] for s in spans_in(spans_file) if s["name"].startswith("planner.tool ")]
    assert names[:3] == [
        "planner.tool segment_count",
        "planner.tool unknown",
        "planner.tool clv_summary",
    ]
    assert "no_such_tool" not in str([s["attributes"] for s in spans_in(spans_file)])


def test_a_crash_resumes_from_the_checkpoint(tmp_path: Path) -> None:
    """A tool that fails the first time (the database went away) stops the graph; a new
    process resumes the thread from the file, running neither the completed tool calls nor
    the completed model steps again."""
    calls: Counter[str] = Counter()
    requests: list[int] = []

    def counted(name: str, fail_first: bool = False) -> Any:
        def tool(args: Any) -> dict[str, Any]:
            calls[name] += 1
            if fail_first and calls[name] == 1:
                raise ConnectionError("the knowledge base is unreachable")
            return {"counted": calls[name]}

        return tool

    tools = PlannerTools(
        segment_count=counted("segment_count"),
        churn_summary=counted("churn_summary"),
        clv_summary=counted("clv_summary"),
        knowledge_search=counted("knowledge_search", fail_first=True),
        allocate=counted("allocate"),
        lint_spec=counted("lint_spec"),
    )

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        requests.append(len(messages))
        return scripted_response(messages)

    counting = PlannerModel(lambda: FunctionModel(model), "counting")
    first = build_planner(tools, counting, SQLiteFileSaver(tmp_path / "planner.sqlite"))
    with pytest.raises(ConnectionError):
        start_plan(first, BRIEF, "crash")
    assert plan_status(first, "plan-crash").status == "running"
    assert calls == {
        "segment_count": 1,
        "churn_summary": 1,
        "clv_summary": 1,
        "knowledge_search": 1,
    }
    assert len(requests) == 3

    second = build_planner(tools, counting, SQLiteFileSaver(tmp_path / "planner.sqlite"))
    # The same brief again (as `liftloop plan` or the API would send it) goes on from the crash.
    plan = start_plan(second, BRIEF, "crash")
    assert plan.status == "awaiting_approval"
    assert calls == {
        "segment_count": 1,
        "churn_summary": 1,
        "clv_summary": 1,
        "knowledge_search": 2,
        "allocate": 1,
        "lint_spec": 2,
    }
    assert len(requests) == 6 and plan.usage.requests == 6
    assert sorted(requests) == requests  # each request saw a longer conversation, none again
    # Starting the same plan again is refused now that it waits for its decision.
    with pytest.raises(PlanConflict, match="already awaiting_approval"):
        start_plan(second, BRIEF, "crash")


def test_approval_is_answered_once() -> None:
    planner = build_planner(PlannerTools(), SCRIPTED)
    plan = start_plan(planner, BRIEF, "once")
    done = resume_plan(planner, plan.thread_id, ApprovalDecision(approved=True, approver="mia"))
    assert done.status == "approved" and done.decision is not None
    assert done.decision.approver == "mia" and done.spec == plan.spec
    with pytest.raises(PlanConflict, match="already approved"):
        resume_plan(planner, plan.thread_id, ApprovalDecision(approved=False))
    with pytest.raises(PlanNotFound, match=r"^thread_id:"):
        resume_plan(planner, "plan-nope", ApprovalDecision(approved=True))


def test_rejection_is_recorded() -> None:
    planner = build_planner(PlannerTools(), SCRIPTED)
    plan = start_plan(planner, "Retention push for AT, up to 10 % off", "retain-at")
    assert plan.spec["channels"] == ["push"] and plan.spec["content"]["market"] == "AT"
    done = resume_plan(planner, plan.thread_id, ApprovalDecision(approved=False, comment="early"))
    assert done.status == "rejected" and done.decision is not None
    assert done.decision.comment == "early"


@pytest.mark.parametrize(
    ("brief", "campaign_id", "field"),
    [
        ("  ", "ok", "brief"),
        ("x" * 4_001, "ok", "brief"),
        ("bell\x07", "ok", "brief"),
        (BRIEF, "Not An Id", "campaign_id"),
    ],
)
def test_bad_input_names_the_field(brief: str, campaign_id: str, field: str) -> None:
    with pytest.raises(PlanningError, match=rf"^{field}:"):
        start_plan(build_planner(PlannerTools(), SCRIPTED), brief, campaign_id)


def test_sqlite_checkpointer_survives_a_new_saver(tmp_path: Path) -> None:
    first = build_planner(PlannerTools(), SCRIPTED, SQLiteFileSaver(tmp_path / "planner.sqlite"))
    plan = start_plan(first, BRIEF, "wb-restart")
    second = build_planner(PlannerTools(), SCRIPTED, SQLiteFileSaver(tmp_path / "planner.sqlite"))
    assert plan_status(second, plan.thread_id).spec == plan.spec
    done = resume_plan(second, plan.thread_id, ApprovalDecision(approved=False))
    assert done.status == "rejected"
    # The first saver reads the thread again from the file: it sees the decision too.
    assert plan_status(first, plan.thread_id).status == "rejected"


def test_the_offline_setting_plans_with_the_scripted_model(tmp_path: Path) -> None:
    model = planner_model(Settings(data_dir=tmp_path))
    assert model.name == SCRIPTED_MODEL_NAME and model.cost_eur(1000, 1000) == 0.0
    made = model.make()
    # Instrumented like the router's hosted models: one GenAI span per request, no content.
    assert isinstance(made, InstrumentedModel) and isinstance(made.wrapped, FunctionModel)
    assert made.instrumentation_settings.include_content is False


def test_a_hosted_setting_plans_with_the_router_model(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, llm_model="openai:gpt-4o-mini", llm_base_url="http://127.0.0.1:9/v1"
    )
    model = planner_model(settings)
    assert model.name == "gpt-4o-mini"
    assert model.cost_eur(1_000_000, 0) == pytest.approx(0.14)  # the router's price
    assert not isinstance(model.make(), FunctionModel)  # built, never called: no network
