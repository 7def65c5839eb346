"""Knowledge base: ingestion, chunking, embeddings, hybrid retrieval and signed snapshots."""

from __future__ import annotations

from tools.rag.errors import KnowledgeError
from tools.rag.knowledge_base import KnowledgeBase, open_knowledge_base
from tools.rag.models import (
    Chunk,
    ChunkMetadata,
    IngestReport,
    ParseFailure,
    SearchFilter,
    SearchHit,
    SignedSnapshot,
)

__all__ = [
    "Chunk",
    "ChunkMetadata",
    "IngestReport",
    "KnowledgeBase",
    "KnowledgeError",
    "ParseFailure",
    "SearchFilter",
    "SearchHit",
    "SignedSnapshot",
    "open_knowledge_base",
]
