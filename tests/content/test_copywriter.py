from __future__ import annotations

import csv
from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models.function import AgentInfo, FunctionModel

from agents.copywriter import Copywriter, copywriter_agent, generate_variant
from liftloop.db import make_engine
from tests.content.conftest import SAMPLE_KNOWLEDGE
from tools.content import GuardResult, VariantRequest
from tools.content.errors import ContentError
from tools.content.guard import GuardContext, builtin_guard
from tools.content.ledger import SqlCostLedger
from tools.content.llm import ModelConnection, ModelRouter, ResponseCache, build_model
from tools.content.models import CopyDraft, GuardReason
from tools.content.offline_model import compose_copy, offline_model
from tools.rag.embeddings import Embedder
from tools.rag.index import EmbeddedIndex
from tools.rag.knowledge_base import KnowledgeBase

DE_REQUEST = VariantRequest(
    campaign_id="winback-de",
    arm="ten_off",
    channel="email",
    language="de",
    market="DE",
    discount_pct=10,
    offer_end="Sonntag",
    product_focus="Regenjacke",
    brief="warm, kein Druck",
)


def test_variant_is_grounded_cited_and_signed(content_kb: KnowledgeBase) -> None:
    variant = generate_variant(DE_REQUEST, Copywriter(content_kb))
    assert variant.guard.passed and not variant.escalated and variant.attempts == 1
    known = {c.meta.doc_id for c in content_kb.index.all_chunks()}
    assert set(variant.citations) <= known and "catalogue-de" in variant.citations
    assert variant.claims_used == ("recycled-halde",)
    assert "10 %" in variant.body and "Sonntag" in variant.body
    assert "{{unsubscribe_url}}" in variant.body
    assert {s.name for s in variant.slots} == {"first_name", "unsubscribe_url", "cta_url"}
    snapshot = content_kb.load_snapshot(variant.snapshot_id)
    assert content_kb.verify(snapshot)
    assert set(variant.cited_chunks) <= set(snapshot.chunk_hashes)
    assert variant.template_version == "1.2.0" and variant.model == "offline-composer"
    assert variant.usage.input_tokens > 0 and variant.usage.cost_eur == 0


def test_generation_is_deterministic_and_arms_differ(content_kb: KnowledgeBase) -> None:
    first = generate_variant(DE_REQUEST, Copywriter(content_kb))
    again = generate_variant(DE_REQUEST, Copywriter(content_kb))
    assert first.body == again.body and first.subject == again.subject
    other_arms = {
        generate_variant(DE_REQUEST.model_copy(update={"arm": arm}), Copywriter(content_kb)).body
        for arm in ("a", "b", "c", "d")
    }
    assert len(other_arms) > 1


def test_cache_and_cost_ledger(content_kb: KnowledgeBase, tmp_path: Path) -> None:
    ledger = SqlCostLedger(make_engine(f"sqlite:///{tmp_path / 'cdp.sqlite'}"))
    router = ModelRouter(prices={"offline-composer": (1000.0, 2000.0)})
    writer = Copywriter(content_kb, router=router, cache=ResponseCache(), ledger=ledger)
    request = DE_REQUEST.model_copy(update={"cycle": 3})
    fresh = generate_variant(request, writer)
    cached = generate_variant(request, writer)
    push = generate_variant(
        request.model_copy(update={"channel": "push", "template_id": "promo_push"}), writer
    )
    assert not fresh.usage.cached and cached.usage.cached
    assert cached.usage.input_tokens == 0 and cached.body == fresh.body
    expected_cost = (fresh.usage.input_tokens * 1000 + fresh.usage.output_tokens * 2000) / 1e6
    assert fresh.usage.cost_eur == pytest.approx(expected_cost)
    costs = ledger.costs("winback-de")
    by_channel = {line.channel: line for line in costs.lines}
    assert by_channel["email"].input_tokens == fresh.usage.input_tokens
    assert by_channel["email"].cached_responses == 1 and by_channel["email"].requests == 1
    assert by_channel["push"].input_tokens == push.usage.input_tokens
    assert {(line.cycle, line.job) for line in costs.lines} == {(3, "generate")}
    assert costs.requests == 2
    assert ledger.spent_eur("winback-de") == pytest.approx(
        fresh.usage.cost_eur + push.usage.cost_eur
    )
    assert ledger.costs("another").lines == ()


def test_guard_rejection_leads_to_a_shorter_revision(content_kb: KnowledgeBase) -> None:
    calls: list[CopyDraft] = []

    def strict_first(draft: CopyDraft, context: GuardContext) -> GuardResult:
        calls.append(draft)
        if len(calls) == 1:
            reason = GuardReason(rule_id="length.body", message="too long for this test")
            return GuardResult(passed=False, reasons=(reason,), guard="test")
        return builtin_guard(draft, context)

    variant = generate_variant(DE_REQUEST, Copywriter(content_kb, guard=strict_first))
    assert variant.attempts == 2 and variant.guard.passed
    assert variant.usage.requests == 2
    assert len(variant.body) < sum(len(b.text) for b in calls[0].body_blocks) + 20
    assert "claim" not in [b.kind for b in variant.body_blocks]


def test_escalates_after_max_revisions(content_kb: KnowledgeBase) -> None:
    def never(draft: CopyDraft, context: GuardContext) -> GuardResult:
        reason = GuardReason(rule_id="discount.above_limit", message="needs approval")
        return GuardResult(passed=False, reasons=(reason,), guard="test")

    cache = ResponseCache()
    writer = Copywriter(content_kb, guard=never, max_revisions=2, cache=cache)
    variant = generate_variant(DE_REQUEST, writer)
    assert variant.escalated and variant.attempts == 3
    assert variant.guard.reasons[0].rule_id == "discount.above_limit"
    # The refusal is remembered too: a retried activity does not pay for it again, and the
    # cached draft is judged afresh (still blocked).
    again = generate_variant(DE_REQUEST, writer)
    assert again.usage.cached and again.usage.requests == 0 and again.escalated


def test_injected_text_never_reaches_the_model(content_kb: KnowledgeBase) -> None:
    prompts: list[str] = []

    def spy(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        prompts.extend(str(p.content) for m in messages for p in m.parts if hasattr(p, "content"))
        return compose_copy(messages, info)

    router = ModelRouter(factory=lambda name: FunctionModel(spy, model_name="offline-composer"))
    request = DE_REQUEST.model_copy(
        update={"language": "en", "market": "*", "brief": "supplier note on email tone"}
    )
    variant = generate_variant(request, Copywriter(content_kb, router=router))
    prompt = "\n".join(prompts)
    # The supplier note is retrieved for this brief, but a chunk scored as an injection is
    # dropped before the prompt is assembled.
    assert prompts and "Ignore all previous instructions" not in prompt
    assert "supplier-note" not in prompt
    assert "90 %" not in variant.body and "supplier-note" not in variant.citations


def test_subject_lines_route_to_the_small_model(content_kb: KnowledgeBase) -> None:
    router = ModelRouter("offline", "small-model", factory=lambda name: offline_model())
    request = DE_REQUEST.model_copy(update={"template_id": "subject_line"})
    variant = generate_variant(request, Copywriter(content_kb, router=router))
    assert variant.model == "small-model" and variant.body == ""
    assert router.name_for("long_copy") == "offline-composer"


def test_openai_compatible_model_replaces_the_offline_one() -> None:
    from pydantic_ai.models.openai import OpenAIChatModel

    connection = ModelConnection(base_url="http://127.0.0.1:9/v1", api_key="sk-test")
    model = build_model("openai:gpt-4o-mini", connection)
    assert isinstance(model, OpenAIChatModel) and model.model_name == "gpt-4o-mini"
    # ALLOW_MODEL_REQUESTS is off in tests: the same agent refuses to call a real endpoint.
    with pytest.raises(RuntimeError, match="ALLOW_MODEL_REQUESTS"):
        copywriter_agent().run_sync("hello", model=model)
    with pytest.raises(ContentError, match=r"^llm_model:.*LIFTLOOP_LLM_API_KEY"):
        ModelRouter("openai:gpt-4o-mini")
    with pytest.raises(ContentError, match=r"^llm_model:.*'offline' or 'openai:"):
        ModelRouter("gpt-4o-mini", connection=connection)


def test_bad_requests_name_the_field(content_kb: KnowledgeBase) -> None:
    with pytest.raises(ContentError, match=r"^channel:"):
        generate_variant(DE_REQUEST.model_copy(update={"channel": "push"}), Copywriter(content_kb))
    with pytest.raises(ValidationError, match="email"):
        VariantRequest.model_validate(
            {"campaign_id": "c", "arm": "a", "email": "someone@example.com"}
        )
    with pytest.raises(ContentError, match=r"^max_revisions:"):
        Copywriter(content_kb, max_revisions=-1)


def test_empty_knowledge_base_escalates_instead_of_inventing(hashing_embedder: Embedder) -> None:
    empty = KnowledgeBase(EmbeddedIndex(), hashing_embedder, b"key")
    variant = generate_variant(DE_REQUEST, Copywriter(empty, max_revisions=1))
    assert variant.escalated and variant.attempts == 2
    assert "citation.missing" in [r.rule_id for r in variant.guard.reasons]
    assert variant.citations == ()


def test_poisoned_brand_block_is_rejected_by_the_copywriter_guard(
    tmp_path: Path, hashing_embedder: Embedder
) -> None:
    """The finding: a re-ingested brand block without trigger words offers 90 % off the whole
    shop and links elsewhere; the copywriter's own guard rejects every draft built on it."""
    rows = list(csv.DictReader((SAMPLE_KNOWLEDGE / "brand_blocks.csv").open(encoding="utf-8")))
    for row in rows:
        if row["role"] == "offer":
            row["text"] = "Take 90 % off the whole shop at https://fjellwind-outlet.example/sale."
    with (tmp_path / "brand_blocks.csv").open("w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (tmp_path / "brand_blocks.csv.meta.yaml").write_text("doc_id: brand-blocks\n", "utf-8")
    kb = KnowledgeBase(EmbeddedIndex(), hashing_embedder, b"key")
    kb.ingest([SAMPLE_KNOWLEDGE])
    report = kb.ingest([tmp_path])
    assert report.replaced_documents == 1 and report.injection_flagged == 0
    request = DE_REQUEST.model_copy(update={"language": "en", "market": "*"})
    variant = generate_variant(request, Copywriter(kb))
    assert variant.escalated and not variant.guard.passed
    rules = {r.rule_id for r in variant.guard.reasons}
    assert {"offer.discount_mismatch", "links.domain_not_allowed"} <= rules
