"""The planner as the installation runs it: its tools over the CDP, the model registry, the
knowledge base, the allocator and the policies; its model from the settings; its threads in the
data directory; its usage in the cost ledger; its decisions in the audit log. The CLI
(`liftloop/cli/plan.py`) and the API (`liftloop/api_plans.py`) both go through `PlanDesk`.

With `LIFTLOOP_LLM_MODEL=offline` (the default) the model is the scripted planner
(`agents/planner_model.py`), with `openai:NAME` the hosted model of the router; the graph is the
same either way.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic_ai.models import Model
from pydantic_ai.models.instrumented import InstrumentationSettings, InstrumentedModel

import tools.content.ledger  # noqa: F401  (registers the ledger's table before engine_for)
from agents.checkpoint import SQLiteFileSaver
from agents.planner import (
    ApprovalDecision,
    PlanConflict,
    PlanFailed,
    PlannerModel,
    PlanningError,
    PlanResult,
    build_planner,
    check_awaiting,
    check_brief,
    plan_status,
    resume_plan,
    start_plan,
    thread_for,
)
from agents.planner_model import SCRIPTED_MODEL_NAME, scripted_planner_model
from agents.planner_tools import KnowledgeArgs, PlannerTools
from liftloop.audit import audit_log
from liftloop.campaigns import CampaignStarted
from liftloop.db import engine_for
from liftloop.knowledge import model_router, open_knowledge, policy_store
from liftloop.loop.spec import CampaignSpec, parse_spec
from liftloop.planning_audience import Audience
from liftloop.planning_budget import Budget
from liftloop.planning_lint import lint_spec
from liftloop.settings import Settings
from tools.audit import AuditEvent, AuditLog, canonical
from tools.content.call_guard import screen_prompt
from tools.content.errors import ContentError
from tools.content.ledger import SqlCostLedger, UsageEntry, UsageLedger
from tools.models.registry import ModelRegistry
from tools.rag import SearchFilter

# What a knowledge hit shows the model: enough to follow a rule, not a whole document.
_EXCERPT_CHARS = 300
StartCampaign = Callable[[CampaignSpec], Awaitable[CampaignStarted]]


def default_campaign_id(brief: str) -> str:
    """The same brief plans the same campaign (so a crashed plan is picked up again), and the id
    says nothing of what the brief says."""
    return "brief-" + hashlib.sha256(brief.encode("utf-8")).hexdigest()[:10]


def _knowledge_search(settings: Settings) -> Callable[[KnowledgeArgs], dict[str, Any]]:
    opened: list[Any] = []  # opened on the first search: loading the index takes a while
    lock = threading.Lock()  # the API plans in several threads at once

    def search(args: KnowledgeArgs) -> dict[str, Any]:
        with lock:
            if not opened:
                opened.append(open_knowledge(settings))
        flt = SearchFilter(market=args.market, language=args.language)
        hits = opened[0].search(args.query, flt, k=args.k)
        return {
            "hits": [
                {
                    "doc_id": h.doc_id,
                    "chunk_id": h.chunk_id,
                    "score": round(h.score, 6),
                    "excerpt": h.text[:_EXCERPT_CHARS],
                }
                for h in hits
            ]
        }

    return search


def planner_tools(settings: Settings) -> PlannerTools:
    engine = engine_for(settings.cdp_url)
    audience = Audience(engine, ModelRegistry(settings.data_dir / "models"))
    budget = Budget(engine, audience)
    policies = policy_store(settings)
    return PlannerTools(
        segment_count=audience.count,
        churn_summary=audience.churn,
        clv_summary=audience.clv,
        knowledge_search=_knowledge_search(settings),
        allocate=budget.allocate,
        lint_spec=lambda args: lint_spec(args, policies),
    )


class PlannerMisconfigured(PlanningError):
    """The settings name a model the planner cannot reach (`openai:` without a key or URL)."""


def _scripted_model() -> Model:
    """The scripted model, instrumented as the router instruments a hosted one: one GenAI
    `chat` span per request, without the prompt or the completion."""
    return InstrumentedModel(
        scripted_planner_model(), InstrumentationSettings(include_content=False)
    )


def planner_model(settings: Settings) -> PlannerModel:
    """The scripted model offline, the router's hosted model otherwise: a new (instrumented)
    model per request either way, whose HTTP client the planner closes after the request."""
    try:
        router = model_router(settings)
    except ContentError as exc:
        raise PlannerMisconfigured(exc.field, exc.reason) from None
    if router.offline("long_copy"):
        name = SCRIPTED_MODEL_NAME
        return PlannerModel(_scripted_model, name, lambda i, o: router.cost_eur(name, i, o))
    hosted = router.name_for("long_copy")
    return PlannerModel(
        lambda: router.model_for("long_copy"), hosted, lambda i, o: router.cost_eur(hosted, i, o)
    )


class PlanDecided(BaseModel):
    model_config = ConfigDict(frozen=True)

    plan: PlanResult
    # The campaign the approval started, if it started one.
    campaign: CampaignStarted | None = None


class PlanDesk:
    """The plans of one installation. A plan is planned or decided by one caller at a time:
    a second one for the same thread is a PlanConflict, not a second run of the graph."""

    def __init__(
        self,
        settings: Settings,
        *,
        tools: PlannerTools | None = None,
        model: PlannerModel | None = None,
        ledger: UsageLedger | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.settings = settings
        self._saver = SQLiteFileSaver(settings.data_dir / "planner.sqlite")
        self.planner = build_planner(
            tools or planner_tools(settings), model or planner_model(settings), self._saver
        )
        self._ledger = ledger
        self._audit = audit
        self._busy: set[str] = set()
        self._lock = threading.Lock()

    def close(self) -> None:
        self._saver.close()

    @contextmanager
    def _hold(self, thread_id: str, doing: str) -> Iterator[None]:
        with self._lock:
            if thread_id in self._busy:
                raise PlanConflict("thread_id", f"plan {thread_id!r} is being {doing} right now")
            self._busy.add(thread_id)
        try:
            yield
        finally:
            with self._lock:
                self._busy.discard(thread_id)

    def ledger(self) -> UsageLedger:
        if self._ledger is None:
            self._ledger = SqlCostLedger(engine_for(self.settings.cdp_url))
        return self._ledger

    def audit(self) -> AuditLog:
        if self._audit is None:
            self._audit = audit_log(self.settings)
        return self._audit

    def _record_usage(self, result: PlanResult) -> None:
        """The plan's model usage, once: when its run ends (awaiting approval, or failed)."""
        usage = result.usage
        self.ledger().record(
            UsageEntry(
                campaign_id=result.campaign_id,
                cycle=None,
                job="plan",
                channel="",
                template_id="planner",
                model=usage.model,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                requests=usage.requests,
                cost_eur=usage.cost_eur,
                cached=False,
            )
        )

    def plan(self, brief: str, campaign_id: str | None = None) -> PlanResult:
        """Plan a campaign up to its approval (or go on with a plan that stopped part-way)."""
        campaign = campaign_id or default_campaign_id(check_brief(brief))
        thread = thread_for(campaign)
        with self._hold(thread, "planned"):
            try:
                result = start_plan(self.planner, self._screened(brief), campaign, thread)
            except PlanFailed:
                self._record_usage(plan_status(self.planner, thread))
                raise
            self._record_usage(result)
            return result

    def _screened(self, brief: str) -> str:
        """The brief as the model may see it: the default brand policy's personal-data rules
        cut out what a manager pasted in (a customer's address, say); an injected brief is
        refused. The market is not known before the brief is read."""
        checked = screen_prompt(brief, policy_store(self.settings).get("US"))
        if checked.blocked:
            raise PlanningError("brief", "; ".join(r.message for r in checked.blocked))
        return checked.prompt

    def status(self, thread_id: str) -> PlanResult:
        return plan_status(self.planner, thread_id)

    async def decide(
        self,
        thread_id: str,
        decision: ApprovalDecision,
        *,
        actor: str,
        start: StartCampaign | None = None,
    ) -> PlanDecided:
        """Approve or reject a waiting plan. With `start`, an approval starts the campaign
        first: if it cannot start, the plan still waits and can be decided again."""
        with self._hold(thread_id, "decided"):
            current = await asyncio.to_thread(check_awaiting, self.planner, thread_id)
            started = None
            if decision.approved and start is not None:
                started = await start(parse_spec(current.spec))
                decision = decision.model_copy(update={"workflow_id": started.workflow_id})
            result = await asyncio.to_thread(resume_plan, self.planner, thread_id, decision)
        self.audit().append(
            AuditEvent(
                kind="plan.decide",
                actor=actor,
                campaign_id=result.campaign_id,
                subject=thread_id,
                details={
                    "approved": decision.approved,
                    "workflow_id": decision.workflow_id,
                    "spec_sha256": hashlib.sha256(canonical(result.spec).encode()).hexdigest(),
                    "model": result.usage.model,
                },
                key=f"plan.decide:{thread_id}",
            )
        )
        return PlanDecided(plan=result, campaign=started)


@contextmanager
def plan_desk(settings: Settings, **kwargs: Any) -> Iterator[PlanDesk]:
    desk = PlanDesk(settings, **kwargs)
    try:
        yield desk
    finally:
        desk.close()
