"""The copywriter agent: retrieve brand knowledge, prompt, draft (a pydantic-ai Agent with a typed
draft as its output), guard, revise, cache and account — one variant per request, never per
person."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

from opentelemetry import trace
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models import Model

from tools.content.call_guard import ModelCallGuard
from tools.content.errors import ContentError
from tools.content.guard import CopyGuard, GuardContext, builtin_guard, sms_body
from tools.content.ledger import MemoryLedger, UsageEntry, UsageLedger
from tools.content.llm import CachedResponse, ModelRouter, ResponseCache, cache_key
from tools.content.models import (
    CopyDraft,
    GeneratedVariant,
    GuardResult,
    TokenUsage,
    VariantRequest,
)
from tools.content.offline_model import REVISION_MARK
from tools.content.prompts import SLOT, PromptLibrary, PromptTemplate, default_library
from tools.rag.knowledge_base import KnowledgeBase
from tools.rag.models import SearchFilter, SearchHit, SignedSnapshot

tracer = trace.get_tracer("liftloop.content")
_GROUNDING_ATTEMPTS = 3
# The brand policy around one variant's model calls, when the caller knows the market's policy.
CallGuards = Callable[[VariantRequest], ModelCallGuard | None]


# What a variant holds when its prompt was refused: nothing was written.
_EMPTY_DRAFT = CopyDraft(subject="", body_blocks=[], call_to_action="")


@cache
def copywriter_agent() -> Agent[None, CopyDraft]:
    """The model, instructions and prompt come per run, from the router and the template."""
    return Agent(
        output_type=CopyDraft,
        name="copywriter",
        # One retry covers a malformed structured answer; guard revisions are counted apart.
        retries=1,
        defer_model_check=True,
    )


def _knowledge_items(hits: Sequence[SearchHit]) -> list[dict[str, Any]]:
    """Retrieved chunks as JSON data: the prompt shows the model data, never instructions."""
    return [
        {
            "ref": f"K{n}",
            "doc_id": hit.doc_id,
            "chunk_id": hit.chunk_id,
            "kind": hit.meta.kind,
            "heading": hit.meta.heading,
            "fields": {k: v for k, v in hit.meta.fields.items() if k != "text"},
            "text": hit.text,
        }
        for n, hit in enumerate(hits, 1)
    ]


class Copywriter:
    def __init__(
        self,
        knowledge: KnowledgeBase,
        *,
        router: ModelRouter | None = None,
        guard: CopyGuard = builtin_guard,
        library: PromptLibrary | None = None,
        cache: ResponseCache | None = None,
        ledger: UsageLedger | None = None,
        max_revisions: int = 2,
        allowed_link_domains: Sequence[str] = (),
        call_guards: CallGuards | None = None,
    ) -> None:
        if max_revisions < 0:
            raise ContentError("max_revisions", f"must be >= 0, got {max_revisions}")
        self.knowledge = knowledge
        self.router = router or ModelRouter()
        self.guard = guard
        self.library = library or default_library()
        self.cache = cache or ResponseCache()
        self.ledger = ledger or MemoryLedger()
        self.max_revisions = max_revisions
        self.call_guards = call_guards
        # Links are slots ({{cta_url}}); a written-out link must go to one of these domains.
        self.allowed_link_domains = tuple(allowed_link_domains)

    def _retrieve(self, template: PromptTemplate, request: VariantRequest) -> list[SearchHit]:
        values = _values(request)
        seen: dict[str, SearchHit] = {}
        for step in template.retrieval:
            flt = SearchFilter(
                groups=request.groups,
                market=None if request.market == "*" else request.market,
                language=request.language,
                kinds=step.kinds,
            )
            query = (
                template.render(step.query, values, check_required=False).strip() or step.purpose
            )
            for hit in self.knowledge.search(query, flt, k=step.k):
                seen.setdefault(hit.chunk_id, hit)
        # A chunk scored as a prompt injection at ingestion never reaches a prompt at all.
        return [hit for hit in seen.values() if not hit.meta.injection_suspected]

    def _grounding(
        self, template: PromptTemplate, request: VariantRequest
    ) -> tuple[SignedSnapshot, list[SearchHit]]:
        """The latest published knowledge, the signed snapshot of it and what was retrieved.

        A re-ingest by another process (`liftloop kb ingest`) is picked up here, without a
        restart; every chunk shown must be in the snapshot the variant cites, so a reload that
        lands between signing and retrieval is retried.
        """
        for _ in range(_GROUNDING_ATTEMPTS):
            self.knowledge.refresh()
            snapshot = self.knowledge.snapshot()
            hits = self._retrieve(template, request)
            if all(snapshot.chunk_hashes.get(h.chunk_id) == h.meta.content_hash for h in hits):
                return snapshot, hits
        raise ContentError(
            "knowledge", "the knowledge base kept changing while the variant was grounded"
        )

    async def generate(self, request: VariantRequest) -> GeneratedVariant:
        """One guarded variant for one (campaign, arm, channel); blocked after N revisions."""
        template = self.library.get(request.template_id)
        if template.channel != request.channel:
            raise ContentError(
                "channel",
                f"template {template.id} is for {template.channel}, not {request.channel}",
            )
        with tracer.start_as_current_span("content.generate_variant") as span:
            snapshot, hits = self._grounding(template, request)
            params = {
                **{
                    k: v
                    for k, v in request.model_dump().items()
                    if k not in ("groups", "cycle", "job")
                },
                "task": template.task,
            }
            values = {
                **_values(request),
                "knowledge_json": json.dumps(_knowledge_items(hits), ensure_ascii=False),
                "parameters_json": json.dumps(params, ensure_ascii=False),
            }
            prompt = template.render(template.prompt, values)
            model_name = self.router.name_for(template.task)
            context = GuardContext(
                template=template,
                language=request.language,
                shown_doc_ids=frozenset(h.doc_id for h in hits),
                approved_claim_ids=frozenset(
                    h.meta.fields["claim_id"]
                    for h in hits
                    if h.meta.kind == "claims" and h.meta.fields.get("status") == "approved"
                ),
                discount_pct=request.discount_pct,
                allowed_link_domains=self.allowed_link_domains,
            )
            call_guard = self.call_guards(request) if self.call_guards else None
            key = cache_key(
                template.id, template.version, model_name, template.instructions + prompt
            )
            cached = self.cache.get(key)
            if cached is not None:
                draft, attempts = cached.draft, cached.attempts
                verdict = self._judge(draft, context, call_guard)
                usage = TokenUsage(cached=True)
            else:
                draft, verdict, usage, attempts = await self._guarded_drafts(
                    template, prompt, model_name, context, call_guard
                )
                # A draft still blocked after its revisions is kept too: a retried activity or a
                # repeated cycle does not pay for the same refusal again (it is judged afresh).
                # A refused prompt was never sent: nothing to remember.
                if usage.requests:
                    self.cache.put(key, CachedResponse(draft=draft, usage=usage, attempts=attempts))
            self.ledger.record(
                UsageEntry(
                    campaign_id=request.campaign_id,
                    cycle=request.cycle,
                    job=request.job,
                    channel=request.channel,
                    template_id=template.id,
                    model=model_name,
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens,
                    requests=usage.requests,
                    cost_eur=usage.cost_eur,
                    cached=usage.cached,
                )
            )
            variant = _variant(
                request,
                template,
                draft,
                verdict,
                hits,
                snapshot.snapshot_id,
                model_name,
                usage,
                attempts,
            )
            span.set_attributes(
                {
                    "content.template_id": template.id,
                    "content.template_version": template.version,
                    "content.model": model_name,
                    "content.channel": request.channel,
                    "content.language": request.language,
                    "content.arm": request.arm,
                    "content.attempts": attempts,
                    "content.cached": usage.cached,
                    "content.escalated": variant.escalated,
                    "content.guard": verdict.guard,
                    "content.guard_rules": [r.rule_id for r in verdict.reasons],
                    "content.citations": len(variant.citations),
                    "content.snapshot_id": snapshot.snapshot_id,
                    "content.input_tokens": usage.input_tokens,
                    "content.output_tokens": usage.output_tokens,
                    "content.cost_eur": usage.cost_eur,
                }
            )
            return variant

    def _judge(
        self, draft: CopyDraft, context: GuardContext, call_guard: ModelCallGuard | None
    ) -> GuardResult:
        """The built-in checks, then the brand policy's block rules on the draft as sent."""
        verdict = self.guard(draft, context)
        if call_guard is None:
            return verdict
        reasons = verdict.reasons + call_guard.check_draft(draft)
        return GuardResult(passed=not reasons, reasons=reasons, guard=f"{verdict.guard}+policy")

    async def _guarded_drafts(
        self,
        template: PromptTemplate,
        prompt: str,
        model_name: str,
        context: GuardContext,
        call_guard: ModelCallGuard | None,
    ) -> tuple[CopyDraft, GuardResult, TokenUsage, int]:
        """Check the prompt, then draft and judge until a draft passes or the revisions run
        out. A prompt the policy refuses is never sent; its variant is blocked with the
        reasons."""
        if call_guard is not None:
            with tracer.start_as_current_span("content.check_prompt") as span:
                checked = call_guard.check_prompt(prompt)
                span.set_attributes(
                    {
                        "content.prompt_redacted": checked.redacted,
                        "content.prompt_blocked": [r.rule_id for r in checked.blocked],
                    }
                )
            if checked.blocked:
                refused = GuardResult(passed=False, reasons=checked.blocked, guard="prompt")
                return _EMPTY_DRAFT, refused, TokenUsage(), 0
            prompt = checked.prompt
        async with self.router.session(template.task) as model:
            return await self._revise(template, prompt, model_name, context, call_guard, model)

    async def _revise(
        self,
        template: PromptTemplate,
        prompt: str,
        model_name: str,
        context: GuardContext,
        call_guard: ModelCallGuard | None,
        model: Model,
    ) -> tuple[CopyDraft, GuardResult, TokenUsage, int]:
        agent = copywriter_agent()
        history: list[ModelMessage] | None = None
        user_prompt = prompt
        input_tokens = output_tokens = requests = 0
        for attempt in range(1, self.max_revisions + 2):
            with tracer.start_as_current_span("content.draft_attempt") as span:
                result = await agent.run(
                    user_prompt,
                    model=model,
                    instructions=template.instructions,
                    message_history=history,
                )
                run_usage = result.usage
                input_tokens += run_usage.input_tokens
                output_tokens += run_usage.output_tokens
                requests += run_usage.requests
                draft = result.output
                verdict = self._judge(draft, context, call_guard)
                span.set_attributes(
                    {
                        "content.attempt": attempt,
                        "gen_ai.request.model": model_name,
                        "gen_ai.usage.input_tokens": run_usage.input_tokens,
                        "gen_ai.usage.output_tokens": run_usage.output_tokens,
                        "content.cost_eur": self.router.cost_eur(
                            model_name, run_usage.input_tokens, run_usage.output_tokens
                        ),
                        "content.guard_passed": verdict.passed,
                        "content.guard_rules": [r.rule_id for r in verdict.reasons],
                    }
                )
            if verdict.passed or attempt > self.max_revisions:
                break
            history = result.all_messages()
            problems = "; ".join(f"[{r.rule_id}] {r.message}" for r in verdict.reasons)
            user_prompt = (
                f"{REVISION_MARK} (attempt {attempt + 1}): the guard rejected the draft:"
                f" {problems}. Return a corrected draft."
            )
        usage = TokenUsage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            requests=requests,
            cost_eur=self.router.cost_eur(model_name, input_tokens, output_tokens),
        )
        return draft, verdict, usage, attempt

    def generate_sync(self, request: VariantRequest) -> GeneratedVariant:
        return asyncio.run(self.generate(request))


def _values(request: VariantRequest) -> dict[str, str]:
    return {
        "brief": request.brief,
        "language": request.language,
        "market": request.market,
        "offer_description": request.offer_description or "no discount",
        "discount_pct": f"{request.discount_pct:g}",
        "offer_end": request.offer_end,
        "product_focus": request.product_focus,
    }


def _variant(
    request: VariantRequest,
    template: PromptTemplate,
    draft: CopyDraft,
    verdict: GuardResult,
    hits: Sequence[SearchHit],
    snapshot_id: str,
    model_name: str,
    usage: TokenUsage,
    attempts: int,
) -> GeneratedVariant:
    # An SMS is one message: its blocks run on one space apart, as the guard measured them.
    body = (
        sms_body(draft)
        if template.channel == "sms"
        else "\n\n".join(b.text for b in draft.body_blocks)
    )
    used = set(SLOT.findall(f"{draft.subject}\n{draft.preheader}\n{body}\n{draft.call_to_action}"))
    cited = set(draft.citations)
    return GeneratedVariant(
        campaign_id=request.campaign_id,
        arm=request.arm,
        channel=request.channel,
        language=request.language,
        subject=draft.subject,
        preheader=draft.preheader,
        body=body,
        body_blocks=tuple(draft.body_blocks),
        cta=draft.call_to_action,
        slots=tuple(s for s in template.slots if s.required or s.name in used),
        claims_used=tuple(draft.claims_used),
        citations=tuple(draft.citations),
        cited_chunks=tuple(h.chunk_id for h in hits if h.doc_id in cited),
        snapshot_id=snapshot_id,
        template_id=template.id,
        template_version=template.version,
        model=model_name,
        usage=usage,
        attempts=attempts,
        guard=verdict,
        escalated=not verdict.passed,
    )


def generate_variant(request: VariantRequest, copywriter: Copywriter) -> GeneratedVariant:
    """Synchronous entry for activities and the CLI; inside an event loop await `generate`."""
    return copywriter.generate_sync(request)
