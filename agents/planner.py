"""The planner: a LangGraph graph from a campaign manager's brief to a campaign spec.

brief → parse → gather (typed tool calls: segment size, churn and CLV summaries, knowledge
search, budget allocation) → build spec → interrupt() for human approval → approved / rejected.

Tools are injected callables so the CDP, model and allocator packages plug in without this module
importing them. LangGraph cannot run inside Temporal workflow code, so the graph runs inside an
activity and pauses at the interrupt. The checkpointer is passed in: the CLI keeps threads in a
SQLite file in the data directory (agents.checkpoint), tests use the in-memory saver.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field

from liftloop.loop.spec import SpecError, parse_spec

tracer = trace.get_tracer("liftloop.agents")

_COUNTRIES = {
    "de": "DE",
    "germany": "DE",
    "deutschland": "DE",
    "at": "AT",
    "austria": "AT",
    "österreich": "AT",
    "ch": "CH",
    "switzerland": "CH",
    "uk": "GB",
    "gb": "GB",
    "fr": "FR",
    "france": "FR",
    "nl": "NL",
    "netherlands": "NL",
}
# Copy is written in German for the German-speaking markets and in English everywhere else.
_GERMAN_MARKETS = {"DE", "AT", "CH"}
_CHANNELS = ("email", "push", "sms")
Goal = Literal["winback", "retention", "acquisition", "promotion"]


class PlanningError(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")


class ParsedBrief(BaseModel):
    model_config = ConfigDict(frozen=True)

    goal: Goal
    market: str | None
    language: str
    max_discount_pct: float
    budget_eur: float | None
    channels: tuple[str, ...]
    tone: str


class ToolCall(BaseModel):
    model_config = ConfigDict(frozen=True)

    tool: str
    args: dict[str, Any]
    result: Any


class ApprovalDecision(BaseModel):
    model_config = ConfigDict(frozen=True)

    approved: bool
    approver: str = ""
    comment: str = ""


class PlanResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    thread_id: str
    status: Literal["awaiting_approval", "approved", "rejected"]
    # Validated as liftloop.domain.CampaignSpec, so `liftloop campaign start` accepts it as is.
    spec: dict[str, Any]
    # What the tools said (audience size, churn, CLV, knowledge, budget split): for the approver.
    evidence: dict[str, Any] = Field(default_factory=dict)
    tool_calls: tuple[ToolCall, ...] = Field(default_factory=tuple)
    decision: ApprovalDecision | None = None


SegmentCount = Callable[[dict[str, Any]], int | None]
Summary = Callable[[dict[str, Any]], dict[str, float] | None]
KnowledgeSearch = Callable[[str, str | None, str], list[dict[str, Any]]]
Allocate = Callable[[float, tuple[str, ...], int | None], dict[str, float]]


def even_split(
    budget_eur: float, channels: tuple[str, ...], audience: int | None
) -> dict[str, float]:
    """Placeholder allocator until the OR-Tools allocator is injected: equal shares per channel."""
    share = round(budget_eur / len(channels), 2) if channels else 0.0
    return dict.fromkeys(channels, share)


@dataclass(frozen=True)
class PlannerTools:
    segment_count: SegmentCount = lambda segment: None
    churn_summary: Summary = lambda segment: None
    clv_summary: Summary = lambda segment: None
    knowledge_search: KnowledgeSearch = lambda query, market, language: []
    allocate: Allocate = even_split


class PlannerState(TypedDict, total=False):
    brief: str
    campaign_id: str
    parsed: dict[str, Any]
    tool_calls: list[dict[str, Any]]
    spec: dict[str, Any]
    evidence: dict[str, Any]
    decision: dict[str, Any]


def parse_brief(brief: str) -> ParsedBrief:
    """Deterministic reading of a brief; a hosted model could replace this node's logic."""
    text = brief.lower()
    if not text.strip():
        raise PlanningError("brief", "must not be empty")
    goal: Goal = "promotion"
    if re.search(r"win[- ]?back|lapsed|reactivat|zurückgewinn", text):
        goal = "winback"
    elif re.search(r"retain|retention|churn", text):
        goal = "retention"
    elif re.search(r"acquire|acquisition|new customers|prospect", text):
        goal = "acquisition"
    market = next(
        (code for word, code in _COUNTRIES.items() if re.search(rf"\b(in|for) {word}\b", text)),
        None,
    )
    discount = re.search(r"(?:at most|max(?:imum)?|up to|höchstens)\s*(\d+(?:[.,]\d+)?)\s*%", text)
    budget = re.search(r"budget\D{0,12}(\d[\d.,\s]*\d|\d)\s*(?:eur|€)", text)
    budget_eur = None
    if budget:
        digits = re.sub(r"[.,\s](?=\d{3}\b)", "", budget.group(1)).replace(",", ".")
        budget_eur = float(digits)
    channels = tuple(c for c in _CHANNELS if c in text) or ("email",)
    tone = re.search(r"(?:tone|ton)[:\s]+([^.;]+)", text)
    return ParsedBrief(
        goal=goal,
        market=market,
        language="de" if market in _GERMAN_MARKETS else "en",
        max_discount_pct=float(discount.group(1).replace(",", ".")) if discount else 0.0,
        budget_eur=budget_eur,
        channels=channels,
        tone=tone.group(1).strip() if tone else "warm, no pressure",
    )


def _segment_for(parsed: ParsedBrief) -> dict[str, Any]:
    rules: list[dict[str, Any]] = []
    if parsed.market:
        rules.append({"trait": "country", "eq": parsed.market})
    if parsed.goal == "winback":
        rules += [
            {"event": "order_completed", "within": "365d", "count_gte": 1},
            {"event": "order_completed", "within": "90d", "count_eq": 0},
        ]
    elif parsed.goal == "retention":
        rules.append({"event": "order_completed", "within": "180d", "count_gte": 1})
    return {"all": rules}


def _offers(max_discount: float) -> list[dict[str, Any]]:
    offers: list[dict[str, Any]] = [{"id": "none", "discount_pct": 0}]
    steps = sorted({d for d in (5.0, 10.0, max_discount) if 0 < d <= max_discount})
    offers += [{"id": f"off_{d:g}".replace(".", "_"), "discount_pct": d} for d in steps]
    return offers


def build_planner(tools: PlannerTools, checkpointer: BaseCheckpointSaver[Any] | None = None) -> Any:
    def parse(state: PlannerState) -> PlannerState:
        return {"parsed": parse_brief(state["brief"]).model_dump(), "tool_calls": []}

    def gather(state: PlannerState) -> PlannerState:
        parsed = ParsedBrief.model_validate(state["parsed"])
        segment = _segment_for(parsed)
        calls: list[ToolCall] = []

        def call(name: str, fn: Callable[..., Any], **args: Any) -> Any:
            with tracer.start_as_current_span(f"planner.tool.{name}") as span:
                result = fn(*args.values())
                span.set_attribute("planner.tool", name)
                calls.append(ToolCall(tool=name, args=args, result=result))
                return result

        audience = call("segment_count", tools.segment_count, segment=segment)
        call("churn_summary", tools.churn_summary, segment=segment)
        call("clv_summary", tools.clv_summary, segment=segment)
        call(
            "knowledge_search",
            tools.knowledge_search,
            query=f"{parsed.goal} {parsed.tone} discount rules",
            market=parsed.market,
            language=parsed.language,
        )
        if parsed.budget_eur is not None:
            call(
                "allocate",
                tools.allocate,
                budget_eur=parsed.budget_eur,
                channels=parsed.channels,
                audience=audience,
            )
        return {"tool_calls": [c.model_dump(mode="json") for c in calls]}

    def build_spec(state: PlannerState) -> PlannerState:
        parsed = ParsedBrief.model_validate(state["parsed"])
        results = {c["tool"]: c["result"] for c in state.get("tool_calls", [])}
        template = "winback_email" if "email" in parsed.channels else "promo_push"
        spec: dict[str, Any] = {
            "id": state["campaign_id"],
            "goal": {"kpi": "contribution_margin", "attribution_window": "7d"},
            "audience": {"segment": _segment_for(parsed), "consent": {"purpose": "marketing"}},
            "channels": list(parsed.channels),
            "offers": _offers(parsed.max_discount_pct),
            "limits": {
                "max_discount_pct": parsed.max_discount_pct,
                "frequency_cap": {"per_week": 2},
                "quiet_hours": {"from": "21:00", "to": "08:00"},
            },
            "experiment": {
                "holdout_pct": 10,
                "policy": "thompson",
                "min_arm_share": 0.01,
                "primary_metric": "contribution_margin",
            },
            "content": {"template": template, "language": parsed.language, "brief": parsed.tone},
            "cadence": {"every": "1d", "max_cycles": 14},
            "stop": {"ship_when": "lift_ci_low_above_zero", "min_cycles": 3},
        }
        try:
            parse_spec(spec)
        except SpecError as exc:
            raise PlanningError("spec", str(exc)) from exc
        evidence = {
            "estimated_audience": results.get("segment_count"),
            "churn": results.get("churn_summary"),
            "clv": results.get("clv_summary"),
            "knowledge": [h.get("doc_id") for h in results.get("knowledge_search") or []],
            "budget_eur": parsed.budget_eur,
            "budget_by_channel_eur": results.get("allocate") or {},
        }
        return {"spec": spec, "evidence": evidence}

    def approval(state: PlannerState) -> PlannerState:
        answer = interrupt(
            {
                "question": "Start this campaign?",
                "spec": state["spec"],
                "evidence": state["evidence"],
            }
        )
        return {"decision": ApprovalDecision.model_validate(answer).model_dump()}

    graph = StateGraph(PlannerState)
    graph.add_node("parse", parse)
    graph.add_node("gather", gather)
    graph.add_node("build_spec", build_spec)
    graph.add_node("approval", approval)
    graph.add_edge(START, "parse")
    graph.add_edge("parse", "gather")
    graph.add_edge("gather", "build_spec")
    graph.add_edge("build_spec", "approval")
    graph.add_edge("approval", END)
    return graph.compile(checkpointer=checkpointer or InMemorySaver(), name="planner")


def _result(graph: Any, thread_id: str) -> PlanResult:
    state = graph.get_state({"configurable": {"thread_id": thread_id}})
    values: PlannerState = state.values
    decision = values.get("decision")
    status: Literal["awaiting_approval", "approved", "rejected"] = "awaiting_approval"
    if decision is not None:
        status = "approved" if decision["approved"] else "rejected"
    return PlanResult(
        thread_id=thread_id,
        status=status,
        spec=values.get("spec", {}),
        evidence=values.get("evidence", {}),
        tool_calls=tuple(ToolCall.model_validate(c) for c in values.get("tool_calls", [])),
        decision=ApprovalDecision.model_validate(decision) if decision else None,
    )


def start_plan(
    graph: Any, brief: str, campaign_id: str, thread_id: str | None = None
) -> PlanResult:
    """Run until the approval interrupt; the returned spec is what the approver sees."""
    thread = thread_id or f"plan-{campaign_id}"
    with tracer.start_as_current_span("planner.start") as span:
        graph.invoke(
            {"brief": brief, "campaign_id": campaign_id}, {"configurable": {"thread_id": thread}}
        )
        result = _result(graph, thread)
        span.set_attributes(
            {"planner.status": result.status, "planner.tools": len(result.tool_calls)}
        )
        return result


def plan_status(graph: Any, thread_id: str) -> PlanResult:
    state = graph.get_state({"configurable": {"thread_id": thread_id}})
    if not state.values:
        raise PlanningError("thread_id", f"no plan {thread_id!r}")
    return _result(graph, thread_id)


def resume_plan(graph: Any, thread_id: str, decision: ApprovalDecision) -> PlanResult:
    """Answer the approval interrupt; a plan can be decided once."""
    current = plan_status(graph, thread_id)
    if current.status != "awaiting_approval":
        raise PlanningError("thread_id", f"plan {thread_id!r} is already {current.status}")
    with tracer.start_as_current_span("planner.resume") as span:
        graph.invoke(
            Command(resume=decision.model_dump()), {"configurable": {"thread_id": thread_id}}
        )
        result = _result(graph, thread_id)
        span.set_attribute("planner.status", result.status)
        return result
