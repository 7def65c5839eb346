"""The knowledge base, models and copywriter named by the settings: the one place that turns
setting values into the RAG and content capabilities' constructor arguments."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from liftloop.credentials import knowledge_signing_key
from liftloop.settings import Settings

# The bundled sample brand knowledge, so the embedded default writes real, cited copy.
KNOWLEDGE_SEED = Path(__file__).resolve().parents[1] / "tools" / "content" / "knowledge"

if TYPE_CHECKING:  # the knowledge stack (embeddings, index) loads only when it is used
    from agents.copywriter import CallGuards, Copywriter
    from policies import PolicyStore
    from tools.content.ledger import UsageLedger
    from tools.content.llm import ModelRouter
    from tools.rag.knowledge_base import KnowledgeBase


def open_knowledge(settings: Settings) -> KnowledgeBase:
    """The embedded knowledge base under the data directory (`<data_dir>/knowledge`), its
    snapshots signed with `LIFTLOOP_KNOWLEDGE_SIGNING_KEY` or the key generated in
    `<data_dir>/secrets/` (`liftloop.credentials`; a public value is refused)."""
    from tools.rag.knowledge_base import open_knowledge_base

    return open_knowledge_base(
        settings.data_dir,
        signing_key=knowledge_signing_key(settings),
        embedding_model=settings.embedding_model,
    )


def model_router(settings: Settings) -> ModelRouter:
    """The models of `LIFTLOOP_LLM_*`: where they are served, their limits and prices."""
    from tools.content.llm import ModelConnection, ModelLimit, ModelRouter

    connection = ModelConnection(
        base_url=settings.llm_base_url,
        api_key=settings.llm_api_key.get_secret_value(),
        timeout_s=settings.llm_timeout_s,
        limits={
            name: ModelLimit.model_validate(limit.model_dump())
            for name, limit in settings.llm_limits.items()
        },
        record_content=settings.llm_trace_content,
    )
    return ModelRouter(
        settings.llm_model,
        settings.llm_small_model,
        connection=connection,
        prices=settings.llm_prices_eur_per_mtok,
    )


def policy_store(settings: Settings) -> PolicyStore:
    """The bundled brand policies, and those of `LIFTLOOP_POLICY_PATH` over them."""
    from policies import PolicyStore

    policies = PolicyStore.bundled()
    if settings.policy_path:
        policies.load(settings.policy_path)
    return policies


def call_guards(policies: PolicyStore) -> CallGuards:
    """The market's brand policy around every model call; a market without one (the CLI's
    `*`) keeps the copywriter's own checks only."""
    from liftloop.loop.copy_sources import finish_email_body
    from policies import PolicyNotFoundError
    from tools.content.call_guard import PolicyCallGuard
    from tools.content.models import VariantRequest

    def guard_for(request: VariantRequest) -> PolicyCallGuard | None:
        try:
            policy = policies.get(request.market)
        except PolicyNotFoundError:
            return None
        return PolicyCallGuard(
            policy,
            request,
            lambda body, r: finish_email_body(body, r.channel, r.market, r.language),
        )

    return guard_for


def copywriter(
    settings: Settings,
    knowledge: KnowledgeBase | None = None,
    *,
    ledger: UsageLedger | None = None,
) -> Copywriter:
    """The copywriter over the knowledge base and the configured models, with the brand
    policies around each model call, the response cache in the data directory, and its usage
    booked in the CDP database's ledger (`liftloop campaign costs`)."""
    from agents.copywriter import Copywriter
    from liftloop.db import engine_for
    from tools.content.ledger import SqlCostLedger
    from tools.content.llm import ResponseCache

    return Copywriter(
        knowledge or open_knowledge(settings),
        router=model_router(settings),
        cache=ResponseCache(settings.data_dir / "content" / "cache"),
        ledger=ledger or SqlCostLedger(engine_for(settings.cdp_url)),
        max_revisions=settings.llm_max_revisions,
        call_guards=call_guards(policy_store(settings)),
    )


def sample_knowledge(settings: Settings) -> KnowledgeBase:
    """The bundled sample knowledge in memory: what the prompt library's evaluation sets are
    written against (they cite its documents), whatever the installation's own knowledge."""
    import secrets

    from tools.rag.embeddings import embedder_from_name
    from tools.rag.index import EmbeddedIndex
    from tools.rag.knowledge_base import KnowledgeBase

    # An in-memory base for this process only: its snapshots need no lasting key.
    knowledge = KnowledgeBase(
        EmbeddedIndex(), embedder_from_name(settings.embedding_model), secrets.token_bytes(32)
    )
    knowledge.ingest([KNOWLEDGE_SEED])
    return knowledge


def evaluation_copywriter(settings: Settings) -> Copywriter:
    """The loop's copywriter over the sample knowledge: the prompt releases' evaluator."""
    return copywriter(settings, sample_knowledge(settings))


def loop_copywriter(settings: Settings) -> Copywriter:
    """The loop's copywriter; an empty knowledge base is seeded with the bundled sample."""
    knowledge = open_knowledge(settings)
    if not knowledge.search("returns", k=1):
        knowledge.ingest([KNOWLEDGE_SEED])
    return copywriter(settings, knowledge)
