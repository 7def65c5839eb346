"""Weaviate adapter of the knowledge-index port (weaviate-client v4, self-provided vectors)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time
from typing import Any
from urllib.parse import urlparse

import numpy as np
from numpy.typing import NDArray

from tools.rag.errors import KnowledgeError
from tools.rag.index import SearchMode
from tools.rag.models import ANY_MARKET, Chunk, ChunkMetadata, SearchFilter, SearchHit

# Far-away bounds stand in for "no date", so freshness is one range filter inside the query.
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(9999, 12, 31, tzinfo=UTC)
_NAMESPACE = uuid.UUID("6f1c9a52-3a57-4a0e-9d4b-2f1f3c0f5e11")


def _as_datetime(day: date | None, fallback: datetime) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC) if day else fallback


class WeaviateIndex:
    def __init__(self, client: Any, collection: str = "LiftloopKnowledge") -> None:
        self._client = client
        self._name = collection
        self._ensure_collection()
        self._collection = client.collections.get(collection)

    @classmethod
    def connect(cls, url: str, collection: str = "LiftloopKnowledge") -> WeaviateIndex:
        """`http://host:8080` (gRPC on 50051 beside it, as the docker-compose stack runs it)."""
        import weaviate

        parsed = urlparse(url)
        if not parsed.hostname:
            raise KnowledgeError("weaviate_url", f"not a URL: {url!r}")
        secure = parsed.scheme == "https"
        client = weaviate.connect_to_custom(
            http_host=parsed.hostname,
            http_port=parsed.port or (443 if secure else 8080),
            http_secure=secure,
            grpc_host=parsed.hostname,
            grpc_port=50051,
            grpc_secure=secure,
        )
        return cls(client, collection)

    def close(self) -> None:
        self._client.close()

    def _ensure_collection(self) -> None:
        from weaviate.classes.config import Configure, DataType, Property, Tokenization

        if self._client.collections.exists(self._name):
            return
        field_tokens = Tokenization.FIELD
        self._client.collections.create(
            self._name,
            vector_config=Configure.Vectors.self_provided(),
            properties=[
                Property(name="text", data_type=DataType.TEXT),
                Property(name="heading", data_type=DataType.TEXT),
                Property(name="chunk_id", data_type=DataType.TEXT, tokenization=field_tokens),
                Property(name="doc_id", data_type=DataType.TEXT, tokenization=field_tokens),
                Property(name="kind", data_type=DataType.TEXT, tokenization=field_tokens),
                Property(name="market", data_type=DataType.TEXT, tokenization=field_tokens),
                Property(name="language", data_type=DataType.TEXT, tokenization=field_tokens),
                Property(name="groups", data_type=DataType.TEXT_ARRAY, tokenization=field_tokens),
                Property(name="valid_from", data_type=DataType.DATE),
                Property(name="valid_to", data_type=DataType.DATE),
                Property(
                    name="meta_json",
                    data_type=DataType.TEXT,
                    skip_vectorization=True,
                    index_searchable=False,
                ),
            ],
        )

    def upsert(self, chunks: Sequence[Chunk], vectors: NDArray[np.float32]) -> None:
        from weaviate.classes.data import DataObject

        if len(chunks) != len(vectors):
            raise KnowledgeError("vectors", f"{len(vectors)} vectors for {len(chunks)} chunks")
        objects = [
            DataObject(
                uuid=uuid.uuid5(_NAMESPACE, chunk.chunk_id),
                vector=[float(x) for x in vector],
                properties={
                    "text": chunk.text,
                    "heading": chunk.meta.heading,
                    "chunk_id": chunk.chunk_id,
                    "doc_id": chunk.meta.doc_id,
                    "kind": chunk.meta.kind,
                    "market": chunk.meta.market,
                    "language": chunk.meta.language,
                    "groups": list(chunk.meta.groups),
                    "valid_from": _as_datetime(chunk.meta.valid_from, _EARLIEST),
                    "valid_to": _as_datetime(chunk.meta.valid_to, _LATEST),
                    "meta_json": chunk.meta.model_dump_json(),
                },
            )
            for chunk, vector in zip(chunks, vectors, strict=True)
        ]
        result = self._collection.data.insert_many(objects)
        if result.has_errors:
            first = next(iter(result.errors.values()))
            raise KnowledgeError("weaviate", f"insert failed: {first.message}")

    def delete_documents(self, doc_ids: Iterable[str]) -> int:
        from weaviate.classes.query import Filter

        ids = list(doc_ids)
        if not ids:
            return 0
        result = self._collection.data.delete_many(
            where=Filter.by_property("doc_id").contains_any(ids)
        )
        return int(result.successful)

    def replace_documents(
        self, doc_ids: Iterable[str], chunks: Sequence[Chunk], vectors: NDArray[np.float32]
    ) -> int:
        """Delete, then upsert (Weaviate has no multi-object transaction; a search in between
        may miss the document for a moment)."""
        removed = self.delete_documents(doc_ids)
        if len(chunks):
            self.upsert(chunks, vectors)
        return removed

    def all_chunks(self) -> list[Chunk]:
        return [self._chunk(item.properties) for item in self._collection.iterator()]

    @staticmethod
    def _chunk(props: Any) -> Chunk:
        meta = ChunkMetadata.model_validate(json.loads(props["meta_json"]))
        return Chunk(chunk_id=props["chunk_id"], text=props["text"], meta=meta)

    @staticmethod
    def _filters(flt: SearchFilter) -> Any:
        from weaviate.classes.query import Filter

        as_of = _as_datetime(flt.as_of or date.today(), _EARLIEST)
        parts = [
            Filter.by_property("groups").contains_any(list(flt.groups)),
            Filter.by_property("valid_from").less_or_equal(as_of),
            Filter.by_property("valid_to").greater_or_equal(as_of),
        ]
        if flt.market is not None:
            parts.append(Filter.by_property("market").contains_any([flt.market, ANY_MARKET]))
        if flt.language is not None:
            parts.append(Filter.by_property("language").equal(flt.language))
        if flt.kinds is not None:
            parts.append(Filter.by_property("kind").contains_any(list(flt.kinds)))
        return Filter.all_of(parts)

    def search(
        self,
        query: str,
        query_vector: NDArray[np.float32] | None,
        flt: SearchFilter,
        k: int,
        mode: SearchMode = "hybrid",
    ) -> list[SearchHit]:
        from weaviate.classes.query import HybridFusion, MetadataQuery

        if k < 1:
            raise KnowledgeError("k", f"must be at least 1, got {k}")
        vector = None if query_vector is None else [float(x) for x in query_vector]
        filters = self._filters(flt)
        metadata = MetadataQuery(score=True, distance=True)
        if mode == "bm25":
            response = self._collection.query.bm25(
                query=query, limit=k, filters=filters, return_metadata=metadata
            )
        elif mode == "vector":
            if vector is None:
                raise KnowledgeError("query_vector", "required for vector search")
            response = self._collection.query.near_vector(
                near_vector=vector, limit=k, filters=filters, return_metadata=metadata
            )
        else:
            response = self._collection.query.hybrid(
                query=query,
                vector=vector,
                alpha=0.5,
                limit=k,
                filters=filters,
                fusion_type=HybridFusion.RANKED,
                return_metadata=metadata,
            )
        hits = []
        for item in response.objects:
            chunk = self._chunk(item.properties)
            score = item.metadata.score
            if score is None and item.metadata.distance is not None:
                score = 1.0 - item.metadata.distance
            hits.append(
                SearchHit(
                    doc_id=chunk.meta.doc_id,
                    chunk_id=chunk.chunk_id,
                    score=float(score or 0.0),
                    text=chunk.text,
                    meta=chunk.meta,
                )
            )
        return hits
