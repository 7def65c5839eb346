"""The planner: a LangGraph graph in which a model turns a campaign manager's brief into a
campaign spec, choosing its own tool calls, and a human approves before anything starts.

    START → think ⇄ act            the model asks for tools; each call runs in its own step
            think → validate       the model submitted a spec: liftloop.loop.spec.parse_spec
            validate → think       errors go back to the model (bounded attempts)
            validate → lint        the policy lint on the final spec, into the evidence
            lint → approval        interrupt(): the plan waits for a decision → END

LangGraph owns the loop, not pydantic-ai: `think` makes one request with pydantic-ai's direct
API (`model_request`, the tools and the `submit_spec` output tool as definitions), so each
model step and each tool call is a step of the graph, checkpointed before the next one starts
(durability "sync"). After a crash the thread is invoked again with no input and goes on from
its last completed step: tool calls already answered are not run again. The conversation lives
in the state as JSON (`ModelMessagesTypeAdapter`), so any checkpointer can keep it.

The model, its name and its price are injected (`PlannerModel`), and so are the tools
(`agents.planner_tools.PlannerTools`); `liftloop/planning.py` wires both from the settings.
LangGraph cannot run inside Temporal workflow code, so the graph runs in the CLI or the API (or
an activity) and pauses at the interrupt.
"""

from __future__ import annotations

import asyncio
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
from pydantic_ai.direct import model_request
from pydantic_ai.messages import (
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelRequest,
    ModelRequestPart,
    ModelResponse,
    RetryFeedbackPart,
    RetryInfo,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models import Model, ModelRequestParameters

from agents.planner_prompt import INSTRUCTIONS, task_prompt
from agents.planner_tools import (
    SUBMIT_SPEC,
    PlannerTools,
    known_name,
    run_tool,
    submit_spec_definition,
    tool_definitions,
)
from liftloop.loop.spec import CAMPAIGN_ID_PATTERN, SpecError, parse_spec, text_problem
from tools.content.llm import close_model

tracer = trace.get_tracer("liftloop.agents")

MAX_BRIEF_CHARS = 4_000
# Line breaks and tabs are how a brief is written; other control characters are not text.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_CAMPAIGN_ID = re.compile(CAMPAIGN_ID_PATTERN)
Status = Literal["running", "awaiting_approval", "approved", "rejected", "failed"]


class PlanningError(ValueError):
    """A plan that cannot be made or answered, as `"<field>: <reason>"`."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class PlanNotFound(PlanningError):
    """No plan has this thread id."""


class PlanConflict(PlanningError):
    """The plan is not in the state the request needs (already decided, another brief)."""


class PlanFailed(PlanningError):
    """The model did not produce a valid spec within its attempts or steps."""


def check_brief(brief: str) -> str:
    if not brief.strip():
        raise PlanningError("brief", "must not be empty")
    if len(brief) > MAX_BRIEF_CHARS:
        raise PlanningError("brief", f"is {len(brief)} characters; at most {MAX_BRIEF_CHARS}")
    if _CONTROL.search(brief) or text_problem(brief):
        raise PlanningError("brief", "must not contain control characters or invalid unicode")
    return brief


def check_campaign_id(campaign_id: str) -> str:
    if not _CAMPAIGN_ID.match(campaign_id):
        raise PlanningError(
            "campaign_id",
            "must be 1-80 lower-case letters, digits, '_' or '-', starting with a letter or digit",
        )
    return campaign_id


def thread_for(campaign_id: str) -> str:
    return f"plan-{campaign_id}"


class ToolCall(BaseModel):
    model_config = ConfigDict(frozen=True)

    step: int
    tool: str
    args: dict[str, Any]
    ok: bool
    result: dict[str, Any]
    # "model": the model chose the call; "graph": the lint the graph runs on the final spec.
    by: Literal["model", "graph"] = "model"


class ApprovalDecision(BaseModel):
    model_config = ConfigDict(frozen=True)

    approved: bool
    approver: str = Field(default="", max_length=200)
    comment: str = Field(default="", max_length=2_000)
    # The campaign's workflow, when the approval started it.
    workflow_id: str | None = None


class PlanUsage(BaseModel):
    model_config = ConfigDict(frozen=True)

    model: str = ""
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_eur: float = 0.0


class PlanResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    thread_id: str
    campaign_id: str
    status: Status
    # Validated with liftloop.loop.spec.parse_spec, so `liftloop campaign start` accepts it.
    spec: dict[str, Any] = Field(default_factory=dict)
    # What the tools said (audience, churn, CLV, knowledge, budget split, lint): for the approver.
    evidence: dict[str, Any] = Field(default_factory=dict)
    tool_calls: tuple[ToolCall, ...] = ()
    usage: PlanUsage = PlanUsage()
    spec_attempts: int = 0
    failure: str | None = None
    decision: ApprovalDecision | None = None


@dataclass(frozen=True)
class PlannerModel:
    """The model of the `think` step. `make` returns a new model for each request, made in
    the request's event loop, whose HTTP client `think` closes in that loop when the request
    ends (a client must not outlive its loop). The model brings its own GenAI instrumentation
    (`InstrumentedModel`: a `chat <model>` span per request); the planner adds none."""

    make: Callable[[], Model]
    name: str
    cost_eur: Callable[[int, int], float] = lambda input_tokens, output_tokens: 0.0


async def _request(
    make: Callable[[], Model], messages: list[ModelMessage], params: ModelRequestParameters
) -> ModelResponse:
    """One request to a model made for it, whose HTTP client (if it has one) is closed when the
    request ends, in the loop that used it. `instrument=False`: the model brings its own."""
    model = make()
    try:
        return await model_request(
            model, messages, model_request_parameters=params, instrument=False
        )
    finally:
        await close_model(model)


def _request_sync(
    make: Callable[[], Model], messages: list[ModelMessage], params: ModelRequestParameters
) -> ModelResponse:
    """`_request` on an event loop of its own, closed when it returns: the CLI has no loop, the
    API plans in worker threads (`asyncio.to_thread`). Not the thread's own loop, which
    `model_request_sync` uses and never closes (one left open per worker thread), nor
    `asyncio.run`, which unsets a loop the thread already has. Like `model_request_sync`, it
    cannot be called from a coroutine; Ctrl-C cancels the request and the client is closed."""
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        return runner.run(_request(make, messages, params))


class PlannerState(TypedDict, total=False):
    brief: str
    campaign_id: str
    model: str
    messages: list[Any]
    # The last response's tool calls still to run, and the answers gathered for the next request.
    pending: list[dict[str, Any]]
    answers: list[dict[str, Any]]
    nudge: str
    draft: dict[str, Any] | None
    submit_call_id: str
    spec_attempts: int
    steps: int
    usage: dict[str, int]
    tool_calls: list[dict[str, Any]]
    spec: dict[str, Any]
    evidence: dict[str, Any]
    failure: str
    decision: dict[str, Any]


def _load(messages: list[Any]) -> list[ModelMessage]:
    return list(ModelMessagesTypeAdapter.validate_python(messages))


def _dump(messages: list[ModelMessage]) -> list[Any]:
    dumped: list[Any] = ModelMessagesTypeAdapter.dump_python(messages, mode="json")
    return dumped


def _answer_part(answer: dict[str, Any]) -> ToolReturnPart:
    outcome = answer["outcome"]
    return ToolReturnPart(
        tool_name=answer["tool"],
        content=answer["content"],
        tool_call_id=answer["call_id"],
        outcome=outcome,
        retry=RetryInfo(cause="validation_error") if outcome == "retried" else None,
    )


def _next_request(state: PlannerState) -> ModelRequest:
    if not state.get("messages"):
        prompt = task_prompt(state["brief"], state["campaign_id"])
        return ModelRequest(parts=[UserPromptPart(content=prompt)], instructions=INSTRUCTIONS)
    parts: list[ModelRequestPart] = [_answer_part(a) for a in state.get("answers", [])]
    if state.get("nudge"):
        parts.append(RetryFeedbackPart(content=state["nudge"], retry=RetryInfo(cause="no_output")))
    return ModelRequest(parts=parts, instructions=INSTRUCTIONS)


def _arguments(call: ToolCallPart) -> dict[str, Any] | None:
    """A call's arguments, or None when a model sent something that is not a JSON object."""
    try:
        return call.args_as_dict(raise_if_invalid=True)
    except (ValueError, AssertionError):  # pydantic-ai asserts that the JSON is an object
        return None


def _evidence(calls: list[ToolCall], spec: dict[str, Any]) -> dict[str, Any]:
    """The latest successful answer of each tool, in the words the approver reads."""
    latest = {c.tool: c for c in calls if c.ok}

    def result(tool: str) -> dict[str, Any] | None:
        call = latest.get(tool)
        return call.result if call else None

    knowledge = result("knowledge_search") or {}
    allocation = latest.get("allocate")
    return {
        "audience": result("segment_count"),
        "churn": result("churn_summary"),
        "clv": result("clv_summary"),
        "knowledge": [h.get("doc_id") for h in knowledge.get("hits") or []],
        "budget_eur": allocation.args.get("budget_eur") if allocation else None,
        "allocation": result("allocate"),
        "lint": result("lint_spec"),
        "channels": spec.get("channels"),
    }


@dataclass(frozen=True)
class Planner:
    """The compiled graph and the model it was built with (whose price the results use)."""

    graph: Any
    model: PlannerModel


def build_planner(
    tools: PlannerTools,
    model: PlannerModel,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
    *,
    max_steps: int = 12,
    max_spec_attempts: int = 3,
) -> Planner:
    """The compiled graph. `max_steps` bounds the model requests of one plan,
    `max_spec_attempts` the specs it may submit."""
    params = ModelRequestParameters(
        function_tools=tool_definitions(),
        output_tools=[submit_spec_definition()],
        output_mode="tool",
        allow_text_output=False,
    )

    def think(state: PlannerState) -> PlannerState:
        steps = state.get("steps", 0)
        if steps >= max_steps:
            return {"failure": f"no valid spec after {max_steps} model requests"}
        messages = [*_load(state.get("messages", [])), _next_request(state)]
        # The model's own `chat` span is the GenAI span of the request; this one is the step's.
        with tracer.start_as_current_span("planner.think") as span:
            response = _request_sync(model.make, messages, params)
            calls = [p for p in response.parts if isinstance(p, ToolCallPart)]
            span.set_attributes(
                {
                    "planner.model": model.name,
                    "gen_ai.usage.input_tokens": response.usage.input_tokens,
                    "gen_ai.usage.output_tokens": response.usage.output_tokens,
                    "planner.step": steps + 1,
                    "planner.tool_calls": [known_name(c.tool_name) for c in calls],
                }
            )
        usage = dict(state.get("usage") or {"requests": 0, "input_tokens": 0, "output_tokens": 0})
        usage["requests"] += 1
        usage["input_tokens"] += response.usage.input_tokens
        usage["output_tokens"] += response.usage.output_tokens
        update: PlannerState = {
            "messages": _dump([*messages, response]),
            "steps": steps + 1,
            "usage": usage,
            "model": model.name,
            "pending": [],
            "answers": [],
            "nudge": "",
            "draft": None,
        }
        submitted = next((c for c in calls if c.tool_name == SUBMIT_SPEC), None)
        others = [c for c in calls if c.tool_name != SUBMIT_SPEC]
        if submitted is not None:
            # Calls beside a submitted spec are answered, not run: the spec ends the search.
            update["draft"] = _arguments(submitted) or {}
            update["submit_call_id"] = submitted.tool_call_id
            update["answers"] = [
                {
                    "tool": c.tool_name,
                    "call_id": c.tool_call_id,
                    "content": {"error": "not run: a spec was submitted in the same response"},
                    "outcome": "failed",
                }
                for c in others
            ]
        elif others:
            update["pending"] = [
                {"tool": c.tool_name, "call_id": c.tool_call_id, "args": _arguments(c)}
                for c in others
            ]
        else:
            update["nudge"] = "Call one of the tools, or submit_spec with the finished spec."
        return update

    def after_think(state: PlannerState) -> str:
        if state.get("failure"):
            return END
        if state.get("draft") is not None:
            return "validate"
        return "act" if state.get("pending") else "think"

    def act(state: PlannerState) -> PlannerState:
        """One pending call per step: a crash loses at most the call that was running."""
        call, *rest = state["pending"]
        outcome = run_tool(tools, call["tool"], call["args"])
        record = ToolCall(
            step=state.get("steps", 0),
            tool=call["tool"],
            args=call["args"] or {},
            ok=outcome.ok,
            result=outcome.result,
        )
        answer = {
            "tool": call["tool"],
            "call_id": call["call_id"],
            "content": outcome.result,
            "outcome": "success" if outcome.ok else "retried",
        }
        return {
            "pending": rest,
            "answers": [*state.get("answers", []), answer],
            "tool_calls": [*state.get("tool_calls", []), record.model_dump(mode="json")],
        }

    def after_act(state: PlannerState) -> str:
        return "act" if state.get("pending") else "think"

    def validate(state: PlannerState) -> PlannerState:
        # The campaign id is the caller's, never the model's to choose.
        draft = {**(state.get("draft") or {}), "id": state["campaign_id"]}
        attempts = state.get("spec_attempts", 0) + 1
        try:
            parse_spec(draft)
        except SpecError as exc:
            errors = [{"field": f, "reason": r} for f, r in exc.problems]
            if attempts >= max_spec_attempts:
                listed = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
                return {
                    "spec_attempts": attempts,
                    "failure": f"the spec was still invalid after {attempts} attempts ({listed})",
                }
            answer = {
                "tool": SUBMIT_SPEC,
                "call_id": state.get("submit_call_id", ""),
                "content": {"accepted": False, "errors": errors},
                "outcome": "retried",
            }
            return {
                "spec_attempts": attempts,
                "draft": None,
                "answers": [*state.get("answers", []), answer],
            }
        return {"spec_attempts": attempts, "spec": draft, "draft": None}

    def after_validate(state: PlannerState) -> str:
        if state.get("failure"):
            return END
        return "lint" if state.get("spec") else "think"

    def lint(state: PlannerState) -> PlannerState:
        outcome = run_tool(tools, "lint_spec", {"spec": state["spec"]})
        record = ToolCall(
            step=state.get("steps", 0),
            tool="lint_spec",
            args={"spec": state["spec"]},
            ok=outcome.ok,
            result=outcome.result,
            by="graph",
        )
        calls = [*(ToolCall.model_validate(c) for c in state.get("tool_calls", [])), record]
        return {
            "tool_calls": [c.model_dump(mode="json") for c in calls],
            "evidence": _evidence(calls, state["spec"]),
        }

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
    graph.add_node("think", think)
    graph.add_node("act", act)
    graph.add_node("validate", validate)
    graph.add_node("lint", lint)
    graph.add_node("approval", approval)
    graph.add_edge(START, "think")
    graph.add_conditional_edges("think", after_think, ["act", "think", "validate", END])
    graph.add_conditional_edges("act", after_act, ["act", "think"])
    graph.add_conditional_edges("validate", after_validate, ["lint", "think", END])
    graph.add_edge("lint", "approval")
    graph.add_edge("approval", END)
    compiled = graph.compile(checkpointer=checkpointer or InMemorySaver(), name="planner")
    return Planner(compiled, model)


def _config(thread_id: str) -> dict[str, Any]:
    # Far above the steps a plan takes (two per tool call, two per spec): `max_steps` ends a
    # plan first; LangGraph's own limit of 25 would cut a thorough model short.
    return {"configurable": {"thread_id": thread_id}, "recursion_limit": 200}


def _status(state: Any) -> Status:
    values: PlannerState = state.values
    decision = values.get("decision")
    if decision is not None:
        return "approved" if decision["approved"] else "rejected"
    if values.get("failure"):
        return "failed"
    waiting = any(task.interrupts for task in state.tasks)
    return "awaiting_approval" if waiting else "running"


def _result(planner: Planner, thread_id: str) -> PlanResult:
    state = planner.graph.get_state(_config(thread_id))
    values: PlannerState = state.values
    if not values:
        raise PlanNotFound("thread_id", f"no plan {thread_id!r}")
    usage = values.get("usage") or {}
    model = planner.model
    decision = values.get("decision")
    return PlanResult(
        thread_id=thread_id,
        campaign_id=values.get("campaign_id", ""),
        status=_status(state),
        spec=values.get("spec", {}),
        evidence=values.get("evidence", {}),
        tool_calls=tuple(ToolCall.model_validate(c) for c in values.get("tool_calls", [])),
        usage=PlanUsage(
            model=values.get("model", model.name),
            requests=usage.get("requests", 0),
            input_tokens=usage.get("input_tokens", 0),
            output_tokens=usage.get("output_tokens", 0),
            cost_eur=model.cost_eur(usage.get("input_tokens", 0), usage.get("output_tokens", 0)),
        ),
        spec_attempts=values.get("spec_attempts", 0),
        failure=values.get("failure"),
        decision=ApprovalDecision.model_validate(decision) if decision else None,
    )


def _run(planner: Planner, thread_id: str, payload: Any, what: str) -> PlanResult:
    with tracer.start_as_current_span(f"planner.{what}") as span:
        span.set_attribute("planner.thread_id", thread_id)
        planner.graph.invoke(payload, _config(thread_id), durability="sync")
        result = _result(planner, thread_id)
        span.set_attributes(
            {
                "planner.status": result.status,
                "planner.tool_calls": len(result.tool_calls),
                "gen_ai.usage.input_tokens": result.usage.input_tokens,
                "gen_ai.usage.output_tokens": result.usage.output_tokens,
            }
        )
    if result.status == "failed":
        raise PlanFailed("spec", result.failure or "the plan failed")
    return result


def start_plan(
    planner: Planner, brief: str, campaign_id: str, thread_id: str | None = None
) -> PlanResult:
    """Run until the approval interrupt; the returned spec is what the approver sees.

    A thread that stopped part-way (a crash) with the same brief goes on from its last
    checkpoint instead; a finished one, or one with another brief, is a PlanConflict."""
    check_brief(brief)
    check_campaign_id(campaign_id)
    thread = thread_id or thread_for(campaign_id)
    values = planner.graph.get_state(_config(thread)).values
    if not values:
        return _run(planner, thread, {"brief": brief, "campaign_id": campaign_id}, "start")
    current = _result(planner, thread)
    if values.get("brief") != brief or current.campaign_id != campaign_id:
        raise PlanConflict("campaign_id", f"plan {thread!r} exists with another brief")
    if current.status != "running":
        raise PlanConflict("campaign_id", f"plan {thread!r} is already {current.status}")
    return _run(planner, thread, None, "continue")


def plan_status(planner: Planner, thread_id: str) -> PlanResult:
    return _result(planner, thread_id)


def _not_waiting(thread_id: str, status: Status) -> PlanConflict:
    if status in ("approved", "rejected"):
        return PlanConflict("thread_id", f"plan {thread_id!r} is already {status}")
    return PlanConflict("thread_id", f"plan {thread_id!r} is {status}, not awaiting approval")


def check_awaiting(planner: Planner, thread_id: str) -> PlanResult:
    """The plan, if it waits for a decision; PlanNotFound or PlanConflict otherwise."""
    current = plan_status(planner, thread_id)
    if current.status != "awaiting_approval":
        raise _not_waiting(thread_id, current.status)
    return current


def resume_plan(planner: Planner, thread_id: str, decision: ApprovalDecision) -> PlanResult:
    """Answer the approval interrupt; a plan can be decided once."""
    check_awaiting(planner, thread_id)
    return _run(planner, thread_id, Command(resume=decision.model_dump()), "resume")
