"""The offline planner model: a scripted pydantic-ai `FunctionModel` that plans like a model.

It reads the brief deterministically (goal, market, discount limit, budget, channels, tone),
then asks for tools one step at a time through tool-call parts — segment size first, churn and
CLV together, the brand's knowledge, the budget split when there is a budget, a lint of its
draft — and reads their answers from the tool-return parts: channels nobody can be reached on,
or that the allocator gives nothing, are dropped; offers the lint blocks are removed. It ends by
calling the `submit_spec` output tool. The graph treats it exactly like a hosted model, so the
offline default exercises the same loop, checkpoints and validation.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic_ai.messages import (
    ModelMessage,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

from agents.planner_prompt import read_task
from agents.planner_tools import SUBMIT_SPEC

SCRIPTED_MODEL_NAME = "offline-planner"

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
    "us": "US",
    "usa": "US",
}
# Copy is written in German for the German-speaking markets and in English everywhere else.
_GERMAN_MARKETS = {"DE", "AT", "CH"}
_CHANNELS = ("email", "push", "sms")
_MAX_CYCLES = 14
Goal = Literal["winback", "retention", "acquisition", "promotion"]


class ParsedBrief(BaseModel):
    model_config = ConfigDict(frozen=True)

    goal: Goal
    market: str | None
    language: str
    max_discount_pct: float
    budget_eur: float | None
    channels: tuple[str, ...]
    tone: str


def parse_brief(brief: str) -> ParsedBrief:
    """The brief's fields as the scripted model reads them (a hosted model reads the prose)."""
    text = brief.lower()
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
    channels = tuple(c for c in _CHANNELS if re.search(rf"\b{c}\b", text)) or ("email",)
    tone = re.search(r"(?:tone|ton)[:\s]+([^.;]+)", text)
    return ParsedBrief(
        goal=goal,
        market=market,
        language="de" if market in _GERMAN_MARKETS else "en",
        max_discount_pct=min(float(discount.group(1).replace(",", ".")), 99.0) if discount else 0.0,
        budget_eur=budget_eur,
        channels=channels,
        tone=tone.group(1).strip() if tone else "warm, no pressure",
    )


def segment_for(parsed: ParsedBrief) -> dict[str, Any]:
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


def draft_spec(
    parsed: ParsedBrief, campaign_id: str, channels: list[str], offers: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "id": campaign_id,
        "goal": {"kpi": "contribution_margin", "attribution_window": "7d"},
        "audience": {"segment": segment_for(parsed), "consent": {"purpose": "marketing"}},
        "channels": channels,
        "offers": offers,
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
        # The copywriter writes from the brand's knowledge in the brief's tone; its e-mail
        # template is the one the loop uses for every channel's sibling templates.
        "content": {
            "generator": "copywriter",
            "template": "winback_email",
            "language": parsed.language,
            "market": parsed.market or "US",
            "brief": parsed.tone,
        },
        "cadence": {"every": "1d", "max_cycles": _MAX_CYCLES},
        "stop": {"ship_when": "lift_ci_low_above_zero", "min_cycles": 3},
    }


class _Seen:
    """What the conversation holds so far: the task, the calls made, the answers received."""

    def __init__(self, messages: list[ModelMessage]) -> None:
        self.task = ""
        self.called: set[str] = set()
        self.results: dict[str, dict[str, Any]] = {}
        self.calls = 0
        for message in messages:
            if isinstance(message, ModelResponse):
                for response_part in message.parts:
                    if isinstance(response_part, ToolCallPart):
                        self.called.add(response_part.tool_name)
                        self.calls += 1
                continue
            for part in message.parts:
                if isinstance(part, UserPromptPart) and not self.task:
                    self.task = part.content if isinstance(part.content, str) else ""
                elif (
                    isinstance(part, ToolReturnPart)
                    and part.outcome == "success"
                    and isinstance(part.content, dict)
                ):
                    self.results[part.tool_name] = dict(part.content)

    def usable(self, tool: str) -> dict[str, Any] | None:
        """A tool's latest answer, unless it was an error or "unavailable"."""
        result = self.results.get(tool)
        if result is None or "unavailable" in result or "error" in result:
            return None
        return result


def _call(name: str, step: int, **args: Any) -> ToolCallPart:
    return ToolCallPart(tool_name=name, args=args, tool_call_id=f"call-{step}-{name}")


def _channels(parsed: ParsedBrief, seen: _Seen) -> list[str]:
    """The brief's channels, less those nobody is reachable on or the allocator gives nothing."""
    channels = list(parsed.channels)
    counted = seen.usable("segment_count")
    if counted and isinstance(counted.get("reachable_by_channel"), dict):
        reachable = [c for c in channels if counted["reachable_by_channel"].get(c, 0) > 0]
        channels = reachable or channels
    split = seen.usable("allocate")
    if split and isinstance(split.get("allocations"), dict):
        # A channel without a measured response stays: the experiment is how it gets one.
        unmeasured = set(split.get("unmeasured") or [])
        funded = [
            c
            for c in channels
            if c in unmeasured or (split["allocations"].get(c) or {}).get("spend_eur", 0) > 0
        ]
        channels = funded or channels
    return channels


def _offers_after_lint(offers: list[dict[str, Any]], seen: _Seen) -> list[dict[str, Any]]:
    """Offers less those the lint blocks (`offers.<i>.…`); the no-discount offer always stays."""
    lint = seen.usable("lint_spec")
    if not lint:
        return offers
    blocked = set()
    for reason in lint.get("reasons") or []:
        match = re.match(r"offers\.(\d+)\.", str(reason.get("field", "")))
        if match and reason.get("severity") == "block":
            blocked.add(int(match.group(1)))
    return [o for i, o in enumerate(offers) if i not in blocked or o["discount_pct"] == 0]


def scripted_response(messages: list[ModelMessage]) -> ModelResponse:
    """The scripted model's next response to a conversation."""
    seen = _Seen(messages)
    brief, campaign_id = read_task(seen.task)
    parsed = parse_brief(brief)
    segment = segment_for(parsed)
    step = seen.calls
    if "segment_count" not in seen.called:
        return ModelResponse(
            parts=[
                TextPart(content="First, how many customers does this audience reach?"),
                _call("segment_count", step, segment=segment, channels=list(parsed.channels)),
            ]
        )
    if "churn_summary" not in seen.called:
        # Independent questions go out together, as a hosted model sends parallel calls.
        return ModelResponse(
            parts=[
                _call("churn_summary", step, segment=segment),
                _call("clv_summary", step + 1, segment=segment),
            ]
        )
    if "knowledge_search" not in seen.called:
        query = f"{parsed.goal} discount rules tone {parsed.tone}"
        return ModelResponse(
            parts=[
                _call(
                    "knowledge_search",
                    step,
                    query=query,
                    market=parsed.market,
                    language=parsed.language,
                )
            ]
        )
    channels = _channels(parsed, seen)
    if parsed.budget_eur is not None and "allocate" not in seen.called:
        return ModelResponse(
            parts=[
                _call(
                    "allocate",
                    step,
                    budget_eur=parsed.budget_eur,
                    channels=channels,
                    segment=segment,
                    cycles=_MAX_CYCLES,
                )
            ]
        )
    offers = _offers(parsed.max_discount_pct)
    if "lint_spec" not in seen.called:
        draft = draft_spec(parsed, campaign_id, channels, offers)
        return ModelResponse(parts=[_call("lint_spec", step, spec=draft)])
    final = draft_spec(parsed, campaign_id, channels, _offers_after_lint(offers, seen))
    return ModelResponse(
        parts=[
            TextPart(content="The spec, with the tools' findings applied."),
            _call(SUBMIT_SPEC, step, **final),
        ]
    )


def _scripted(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    return scripted_response(messages)


def scripted_planner_model() -> FunctionModel:
    return FunctionModel(_scripted, model_name=SCRIPTED_MODEL_NAME)
