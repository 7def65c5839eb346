"""The knowledge base and copywriter named by the settings: the one place that turns setting
values into the RAG and content capabilities' constructor arguments."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from liftloop.credentials import knowledge_signing_key
from liftloop.settings import Settings

# The bundled sample brand knowledge, so the embedded default writes real, cited copy.
KNOWLEDGE_SEED = Path(__file__).resolve().parents[1] / "tools" / "content" / "knowledge"

if TYPE_CHECKING:  # the knowledge stack (embeddings, index) loads only when it is used
    from agents.copywriter import Copywriter
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
    from tools.content.llm import ModelRouter

    return ModelRouter(settings.llm_model, settings.llm_small_model)


def copywriter(settings: Settings, knowledge: KnowledgeBase | None = None) -> Copywriter:
    """The copywriter over the knowledge base, models, response cache and cost ledger."""
    from agents.copywriter import Copywriter
    from tools.content.llm import CostLedger, ResponseCache

    return Copywriter(
        knowledge or open_knowledge(settings),
        router=model_router(settings),
        cache=ResponseCache(settings.data_dir / "content" / "cache"),
        ledger=CostLedger(settings.data_dir / "content" / "usage.jsonl"),
    )


def loop_copywriter(settings: Settings) -> Copywriter:
    """The loop's copywriter; an empty knowledge base is seeded with the bundled sample."""
    from agents.copywriter import Copywriter

    knowledge = open_knowledge(settings)
    if not knowledge.search("returns", k=1):
        knowledge.ingest([KNOWLEDGE_SEED])
    return Copywriter(knowledge, router=model_router(settings))
