"""The planner's tools: typed arguments, their definitions for the model, and the one runner
that validates a call, runs the injected callable in a span and answers the model.

A tool is an injected callable from its argument model to a JSON-able mapping, so the CDP, the
models, the allocator and the policies plug in from the shell (`liftloop/planning.py`) without
this package importing it. Tools return aggregates only — counts, means, quantiles, document
ids — never a profile: what a tool returns goes into the model's context and the plan's evidence.

A bad argument, or input a tool refuses (a `ValueError`, such as a segment that does not
compile), is answered to the model as an error result it can correct; anything else (the
database is gone) propagates, so the graph stops at its last checkpoint and can be resumed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_ai.tools import ToolDefinition

from liftloop.loop.spec import CampaignSpec
from tools.cdp.messages import Purpose

tracer = trace.get_tracer("liftloop.agents")

ChannelName = Literal["email", "push", "sms"]
SUBMIT_SPEC = "submit_spec"
# What an error result quotes of a refusal: enough to correct the call, never a whole input.
_MAX_ERROR_CHARS = 600


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SegmentArgs(_Args):
    segment: dict[str, Any] = Field(
        description="the audience filter, as a campaign spec's audience.segment: "
        '{"all": [{"trait": "country", "eq": "DE"}, '
        '{"event": "order_completed", "within": "90d", "count_eq": 0}]}'
    )
    channels: list[ChannelName] = Field(
        default_factory=lambda: list[ChannelName](["email"]),
        min_length=1,
        max_length=3,
        description="channels whose consent makes a matched person reachable",
    )
    purpose: Purpose = "marketing"


class ScoreArgs(_Args):
    segment: dict[str, Any] = Field(description="the audience filter to score")


class KnowledgeArgs(_Args):
    query: str = Field(min_length=1, max_length=500)
    market: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    language: Literal["en", "de"] | None = None
    k: int = Field(default=3, ge=1, le=10)


class AllocateArgs(_Args):
    budget_eur: float = Field(gt=0, le=1e9, description="the campaign's sending budget in EUR")
    channels: list[ChannelName] = Field(min_length=1, max_length=3)
    segment: dict[str, Any] = Field(description="the audience the budget reaches")
    cycles: int = Field(default=1, ge=1, le=10_000, description="cycles the budget covers")
    purpose: Purpose = "marketing"


class LintArgs(_Args):
    spec: dict[str, Any] = Field(description="the draft campaign spec")


Result = dict[str, Any]


def _unavailable(what: str) -> Callable[[Any], Result]:
    def tool(args: Any) -> Result:
        return {"unavailable": f"no {what} is connected to this planner"}

    return tool


_NO_CDP = _unavailable("CDP")
_NO_CHURN = _unavailable("churn model")
_NO_CLV = _unavailable("CLV model")
_NO_KNOWLEDGE = _unavailable("knowledge base")
_NO_ALLOCATOR = _unavailable("budget allocator")
_NO_LINT = _unavailable("policy lint")


@dataclass(frozen=True)
class PlannerTools:
    """The capabilities the model may call; a tool left out answers "unavailable"."""

    segment_count: Callable[[SegmentArgs], Result] = _NO_CDP
    churn_summary: Callable[[ScoreArgs], Result] = _NO_CHURN
    clv_summary: Callable[[ScoreArgs], Result] = _NO_CLV
    knowledge_search: Callable[[KnowledgeArgs], Result] = _NO_KNOWLEDGE
    allocate: Callable[[AllocateArgs], Result] = _NO_ALLOCATOR
    lint_spec: Callable[[LintArgs], Result] = _NO_LINT


@dataclass(frozen=True)
class _Tool:
    args: type[_Args]
    description: str


TOOLS: dict[str, _Tool] = {
    "segment_count": _Tool(
        SegmentArgs,
        "Count the CDP profiles a segment matches now, and how many of them consented to the "
        "purpose on each channel (the reachable audience, as the campaign's segment stage "
        "counts it).",
    ),
    "churn_summary": _Tool(
        ScoreArgs,
        "Summarise churn risk over a segment: the share of its buyers the CLV model "
        "(BG/NBD) no longer expects to be active, with quantiles.",
    ),
    "clv_summary": _Tool(
        ScoreArgs,
        "Summarise customer lifetime value over a segment (BG/NBD + Gamma-Gamma, next 12 "
        "months, EUR): mean, quantiles and total.",
    ),
    "knowledge_search": _Tool(
        KnowledgeArgs,
        "Search the brand knowledge base (guidelines, claims, offer rules, FAQs) for a market "
        "and language; returns document ids and short excerpts.",
    ),
    "allocate": _Tool(
        AllocateArgs,
        "Split a budget across channels with the OR-Tools allocator, from each channel's "
        "measured response and message cost; a channel that does not pay back gets nothing.",
    ),
    "lint_spec": _Tool(
        LintArgs,
        "Check a draft campaign spec against the brand policy of its market and the "
        "campaign's own limits: allow, escalate (a human approves) or block, with reasons.",
    ),
}


def tool_definitions() -> list[ToolDefinition]:
    return [
        ToolDefinition(
            name=name,
            description=tool.description,
            parameters_json_schema=tool.args.model_json_schema(),
        )
        for name, tool in TOOLS.items()
    ]


def submit_spec_definition() -> ToolDefinition:
    """The output tool: its arguments are the campaign spec itself."""
    return ToolDefinition(
        name=SUBMIT_SPEC,
        description="Submit the finished campaign spec. It is validated; errors come back.",
        parameters_json_schema=CampaignSpec.model_json_schema(),
        kind="output",
    )


class ToolOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    ok: bool
    # The tool's result, or {"error": ...} for a call the model has to correct.
    result: Result


def _error_text(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        # Where and why, without echoing the input back (`input` may be long).
        text = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
    else:
        text = str(exc)
    return text[:_MAX_ERROR_CHARS]


def known_name(name: str) -> str:
    """A tool name fit for a span: a model may call anything, and what it writes stays out."""
    return name if name in TOOLS or name == SUBMIT_SPEC else "unknown"


def run_tool(tools: PlannerTools, name: str, raw_args: Mapping[str, Any] | None) -> ToolOutcome:
    """One call the model chose, in its own span (tool name, argument keys, result size).
    `raw_args` None: the model's arguments were not a JSON object."""
    tool = TOOLS.get(name)
    declared = set(tool.args.model_fields) if tool else set()
    keys = list(raw_args or {})
    with tracer.start_as_current_span(f"planner.tool {known_name(name)}") as span:
        span.set_attributes(
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": known_name(name),
                # Only the declared keys: any other key is the model's own text.
                "planner.tool.arg_keys": sorted(k for k in keys if k in declared),
                "planner.tool.unknown_arg_keys": sum(1 for k in keys if k not in declared),
            }
        )
        if raw_args is None:
            outcome = ToolOutcome(ok=False, result={"error": "the arguments are not a JSON object"})
        elif tool is None:
            outcome = ToolOutcome(
                ok=False,
                result={"error": f"unknown tool {name[:80]!r}; use one of {sorted(TOOLS)}"},
            )
        else:
            try:
                args = tool.args.model_validate(dict(raw_args))
                result = getattr(tools, name)(args)
                # Into the state and the conversation as plain JSON, whatever the tool built.
                outcome = ToolOutcome(ok=True, result=json.loads(json.dumps(result, default=str)))
            except ValueError as exc:  # pydantic's ValidationError is one too
                outcome = ToolOutcome(ok=False, result={"error": _error_text(exc)})
        span.set_attributes(
            {
                "planner.tool.ok": outcome.ok,
                "planner.tool.result_bytes": len(json.dumps(outcome.result, default=str)),
            }
        )
        return outcome
