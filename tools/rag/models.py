"""Boundary models of the knowledge base."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DocKind = Literal["guideline", "blocks", "catalogue", "claims", "faq", "text"]

# Chunks whose market is "*" apply to every market.
ANY_MARKET = "*"


class ChunkMetadata(BaseModel):
    model_config = ConfigDict(frozen=True)

    doc_id: str
    doc_version: str
    source: str
    kind: DocKind
    market: str = ANY_MARKET
    language: str = "en"
    groups: tuple[str, ...] = ("public",)
    valid_from: date | None = None
    valid_to: date | None = None
    heading: str = ""
    content_hash: str
    # Set at ingestion when the text looks like an instruction to the model rather than knowledge.
    injection_suspected: bool = False
    # Structured fields of catalogue rows, claims, brand blocks and FAQ entries (sku, claim_id...).
    fields: dict[str, str] = Field(default_factory=dict)


class Chunk(BaseModel):
    model_config = ConfigDict(frozen=True)

    chunk_id: str
    text: str
    meta: ChunkMetadata


class SearchFilter(BaseModel):
    """Restrictions applied inside a query, before the top-k cut."""

    model_config = ConfigDict(frozen=True)

    groups: tuple[str, ...] = ("public",)
    market: str | None = None
    language: str | None = None
    as_of: date | None = None
    kinds: tuple[DocKind, ...] | None = None

    def allows(self, meta: ChunkMetadata) -> bool:
        if not set(meta.groups) & set(self.groups):
            return False
        if self.market is not None and meta.market not in (ANY_MARKET, self.market):
            return False
        if self.language is not None and meta.language != self.language:
            return False
        if self.kinds is not None and meta.kind not in self.kinds:
            return False
        if self.as_of is not None:
            if meta.valid_from is not None and self.as_of < meta.valid_from:
                return False
            if meta.valid_to is not None and self.as_of > meta.valid_to:
                return False
        return True


class SearchHit(BaseModel):
    model_config = ConfigDict(frozen=True)

    doc_id: str
    chunk_id: str
    score: float
    text: str
    meta: ChunkMetadata


class ParseFailure(BaseModel):
    """A file that was not ingested. `error` names why: `parse_error`, or a refusal of the path
    (`symlink_refused`, `outside_root`, `not_regular_file`, `not_found`, `path_refused`)."""

    model_config = ConfigDict(frozen=True)

    path: str
    reason: str
    error: str = "parse_error"


class IngestReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    documents: int
    chunks: int
    replaced_documents: int
    injection_flagged: int
    failures: tuple[ParseFailure, ...] = ()
    # How many of the failures are refused paths (links, outside the folder, devices).
    refused: int = 0
    snapshot_id: str


class SignedSnapshot(BaseModel):
    """A manifest of every chunk hash the index holds, signed so an auditor can verify it."""

    model_config = ConfigDict(frozen=True)

    snapshot_id: str
    created_at: str
    chunk_hashes: dict[str, str]
    signature: str
