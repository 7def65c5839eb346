"""The copywriter agent: retrieve brand knowledge, prompt, draft (a pydantic-ai Agent with a typed
draft as its output), guard, revise, cache and account — one variant per request, never per
person."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from functools import cache
from typing import Any

from opentelemetry import trace
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage

from tools.content.errors import ContentError
from tools.content.guard import CopyGuard, GuardContext, builtin_guard, sms_body
from tools.content.llm import (
    CachedResponse,
    CostLedger,
    ModelRouter,
    ResponseCache,
    UsageEntry,
    cache_key,
)
from tools.content.models import (
    CopyDraft,
    GeneratedVariant,
    GuardResult,
    TokenUsage,
    VariantRequest,
)
from tools.content.offline_model import REVISION_MARK
from tools.content.prompts import SLOT, PromptLibrary, PromptTemplate, default_library
from tools.rag.injection import quote_untrusted
from tools.rag.knowledge_base import KnowledgeBase
from tools.rag.models import SearchFilter, SearchHit, SignedSnapshot

tracer = trace.get_tracer("liftloop.content")
_GROUNDING_ATTEMPTS = 3


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
    """Retrieved chunks as JSON data; suspected injections are additionally fenced as quotes."""
    return [
        {
            "ref": f"K{n}",
            "doc_id": hit.doc_id,
            "chunk_id": hit.chunk_id,
            "kind": hit.meta.kind,
            "heading": hit.meta.heading,
            "fields": {k: v for k, v in hit.meta.fields.items() if k != "text"},
            "text": quote_untrusted(hit.text) if hit.meta.injection_suspected else hit.text,
            "injection_suspected": hit.meta.injection_suspected,
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
        ledger: CostLedger | None = None,
        max_revisions: int = 2,
        allowed_link_domains: Sequence[str] = (),
    ) -> None:
        if max_revisions < 0:
            raise ContentError("max_revisions", f"must be >= 0, got {max_revisions}")
        self.knowledge = knowledge
        self.router = router or ModelRouter()
        self.guard = guard
        self.library = library or default_library()
        self.cache = cache or ResponseCache()
        self.ledger = ledger or CostLedger()
        self.max_revisions = max_revisions
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
        return list(seen.values())

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
        """One guarded variant for one (campaign, arm, channel); escalates after N revisions."""
        template = self.library.get(request.template_id)
        if template.channel != request.channel:
            raise ContentError(
                "channel",
                f"template {template.id} is for {template.channel}, not {request.channel}",
            )
        with tracer.start_as_current_span("content.generate_variant") as span:
            snapshot, hits = self._grounding(template, request)
            params = {
                **{k: v for k, v in request.model_dump().items() if k not in ("groups", "job_id")},
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
            key = cache_key(
                template.id, template.version, model_name, template.instructions + prompt
            )
            cached = self.cache.get(key)
            if cached is not None:
                draft, attempts = cached.draft, cached.attempts
                verdict = self.guard(draft, context)
                usage = TokenUsage(cached=True)
            else:
                draft, verdict, usage, attempts = await self._draft_and_guard(
                    template, prompt, model_name, context
                )
                if verdict.passed:
                    self.cache.put(key, CachedResponse(draft=draft, usage=usage, attempts=attempts))
            self.ledger.record(
                UsageEntry(
                    job_id=request.job_id
                    or f"{request.campaign_id}:{request.arm}:{request.channel}",
                    campaign_id=request.campaign_id,
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
                    "content.guard_rules": [r.rule_id for r in verdict.reasons],
                    "content.citations": len(variant.citations),
                    "content.snapshot_id": snapshot.snapshot_id,
                    "content.input_tokens": usage.input_tokens,
                    "content.output_tokens": usage.output_tokens,
                }
            )
            return variant

    async def _draft_and_guard(
        self, template: PromptTemplate, prompt: str, model_name: str, context: GuardContext
    ) -> tuple[CopyDraft, GuardResult, TokenUsage, int]:
        agent = copywriter_agent()
        model = self.router.model_for(template.task)
        history: list[ModelMessage] | None = None
        user_prompt = prompt
        input_tokens = output_tokens = requests = 0
        for attempt in range(1, self.max_revisions + 2):
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
            verdict = self.guard(draft, context)
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
