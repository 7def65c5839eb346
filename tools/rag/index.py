"""The knowledge-index port and its embedded default (numpy exact search, usearch HNSW, BM25, RRF).

Filters become a boolean mask over the chunks before any ranking, so a top-k never contains a
chunk the caller may not see and never comes back short because such chunks were cut after it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from tools.rag.bm25 import BM25Index
from tools.rag.errors import KnowledgeError
from tools.rag.models import ANY_MARKET, Chunk, SearchFilter, SearchHit

SearchMode = Literal["hybrid", "vector", "bm25"]
RRF_K = 60
_HNSW_FILE = "hnsw.usearch"
_NO_DATE_LOW = np.iinfo(np.int64).min
_NO_DATE_HIGH = np.iinfo(np.int64).max


class KnowledgeIndex(Protocol):
    """Where chunks and their vectors live; the embedded store and Weaviate implement it."""

    def upsert(self, chunks: Sequence[Chunk], vectors: NDArray[np.float32]) -> None: ...

    def delete_documents(self, doc_ids: Iterable[str]) -> int: ...

    def all_chunks(self) -> list[Chunk]: ...

    def search(
        self,
        query: str,
        query_vector: NDArray[np.float32] | None,
        flt: SearchFilter,
        k: int,
        mode: SearchMode = "hybrid",
    ) -> list[SearchHit]: ...


def reciprocal_rank_fusion(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> dict[int, float]:
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking):
            fused[item] = fused.get(item, 0.0) + 1.0 / (k + rank + 1)
    return fused


def top_k_masked(scores: NDArray[Any], mask: NDArray[np.bool_], k: int) -> NDArray[np.int64]:
    """Indices of the k best allowed scores, best first."""
    allowed = np.flatnonzero(mask)
    if allowed.size == 0 or k <= 0:
        return np.zeros(0, dtype=np.int64)
    sub = scores[allowed]
    part = np.argpartition(-sub, k - 1)[:k] if k < sub.size else np.arange(sub.size)
    return allowed[part[np.argsort(-sub[part], kind="stable")]].astype(np.int64)


class EmbeddedIndex:
    """Exact cosine search in numpy, with an HNSW graph (usearch) once the index is large."""

    def __init__(
        self,
        directory: Path | None = None,
        *,
        hnsw_min_size: int = 200_000,
        hnsw_expansion: int = 256,
    ) -> None:
        self._dir = directory
        self._hnsw_min_size = hnsw_min_size
        self._hnsw_expansion = hnsw_expansion
        self._chunks: list[Chunk] = []
        self._vectors = np.zeros((0, 0), dtype=np.float32)
        self._derived_ready = False
        self._hnsw: Any = None
        if directory is not None and (directory / "chunks.jsonl").exists():
            self._load(directory)

    # -- writing -------------------------------------------------------------------------------
    def upsert(self, chunks: Sequence[Chunk], vectors: NDArray[np.float32]) -> None:
        if len(chunks) != len(vectors):
            raise KnowledgeError("vectors", f"{len(vectors)} vectors for {len(chunks)} chunks")
        if not chunks:
            return
        new_ids = {c.chunk_id for c in chunks}
        keep = [i for i, c in enumerate(self._chunks) if c.chunk_id not in new_ids]
        vectors = np.asarray(vectors, dtype=np.float32)
        if self._vectors.size and self._vectors.shape[1] != vectors.shape[1]:
            raise KnowledgeError(
                "vectors",
                f"dimension {vectors.shape[1]} differs from the index's {self._vectors.shape[1]};"
                " re-ingest everything after changing the embedder",
            )
        old = self._vectors[keep] if self._vectors.size else vectors[:0]
        self._chunks = [self._chunks[i] for i in keep] + list(chunks)
        self._vectors = np.vstack([old, vectors])
        self._changed()

    def delete_documents(self, doc_ids: Iterable[str]) -> int:
        doomed = set(doc_ids)
        keep = [i for i, c in enumerate(self._chunks) if c.meta.doc_id not in doomed]
        removed = len(self._chunks) - len(keep)
        if removed:
            self._chunks = [self._chunks[i] for i in keep]
            self._vectors = self._vectors[keep]
            self._changed()
        return removed

    def all_chunks(self) -> list[Chunk]:
        return list(self._chunks)

    def _changed(self) -> None:
        self._derived_ready = False
        self._hnsw = None
        if self._dir is not None:
            (self._dir / _HNSW_FILE).unlink(missing_ok=True)
            self._save(self._dir)

    # -- persistence ---------------------------------------------------------------------------
    def _save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / "chunks.jsonl.tmp"
        with tmp.open("w", encoding="utf-8") as out:
            for chunk in self._chunks:
                out.write(chunk.model_dump_json() + "\n")
        np.save(directory / "vectors.tmp.npy", self._vectors)
        (directory / "vectors.tmp.npy").replace(directory / "vectors.npy")
        tmp.replace(directory / "chunks.jsonl")

    def _load(self, directory: Path) -> None:
        with (directory / "chunks.jsonl").open(encoding="utf-8") as lines:
            self._chunks = [Chunk.model_validate_json(line) for line in lines if line.strip()]
        self._vectors = np.load(directory / "vectors.npy").astype(np.float32, copy=False)
        if len(self._vectors) != len(self._chunks):
            raise KnowledgeError(str(directory), "chunks.jsonl and vectors.npy disagree in length")

    # -- filtering -----------------------------------------------------------------------------
    def _ensure_derived(self) -> None:
        if self._derived_ready:
            return
        metas = [c.meta for c in self._chunks]
        self._markets = np.array([m.market for m in metas], dtype=object)
        self._languages = np.array([m.language for m in metas], dtype=object)
        self._kinds = np.array([m.kind for m in metas], dtype=object)
        self._valid_from = np.array(
            [m.valid_from.toordinal() if m.valid_from else _NO_DATE_LOW for m in metas],
            dtype=np.int64,
        )
        self._valid_to = np.array(
            [m.valid_to.toordinal() if m.valid_to else _NO_DATE_HIGH for m in metas], dtype=np.int64
        )
        self._group_masks: dict[str, NDArray[np.bool_]] = {}
        for row, meta in enumerate(metas):
            for group in meta.groups:
                mask = self._group_masks.setdefault(group, np.zeros(len(metas), dtype=bool))
                mask[row] = True
        self._bm25 = BM25Index([f"{c.meta.heading}\n{c.text}" for c in self._chunks])
        self._derived_ready = True

    def mask(self, flt: SearchFilter) -> NDArray[np.bool_]:
        self._ensure_derived()
        n = len(self._chunks)
        allowed = np.zeros(n, dtype=bool)
        for group in flt.groups:
            if group in self._group_masks:
                allowed |= self._group_masks[group]
        if flt.market is not None:
            allowed &= (self._markets == flt.market) | (self._markets == ANY_MARKET)
        if flt.language is not None:
            allowed &= self._languages == flt.language
        if flt.kinds is not None:
            allowed &= np.isin(self._kinds, list(flt.kinds))
        as_of = (flt.as_of or date.today()).toordinal()
        allowed &= (self._valid_from <= as_of) & (self._valid_to >= as_of)
        return allowed

    # -- ranking -------------------------------------------------------------------------------
    def vector_ranking(
        self, query_vector: NDArray[np.float32], mask: NDArray[np.bool_], k: int
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        if len(self._chunks) >= self._hnsw_min_size and mask.mean() >= 0.2:
            rows = self._hnsw_search(query_vector, mask, k)
        else:
            rows = top_k_masked(self._vectors @ query_vector, mask, k)
        return rows, (self._vectors[rows] @ query_vector).astype(np.float32)

    def _hnsw_search(
        self, query_vector: NDArray[np.float32], mask: NDArray[np.bool_], k: int
    ) -> NDArray[np.int64]:
        """Grow the candidate list until k allowed rows are found, so filtering stays in-query."""
        from usearch.index import Index

        if self._hnsw is None:
            self._hnsw = Index(
                ndim=self._vectors.shape[1],
                metric="ip",
                dtype="f32",
                connectivity=32,
                expansion_add=256,
                expansion_search=self._hnsw_expansion,
            )
            saved = self._dir / _HNSW_FILE if self._dir is not None else None
            if saved is not None and saved.exists():
                self._hnsw.load(str(saved))
            if len(self._hnsw) != len(self._vectors):
                # Building the graph is the slow part, so it is kept beside the vectors.
                self._hnsw.reset()
                self._hnsw.add(np.arange(len(self._vectors)), self._vectors)
                if saved is not None:
                    self._hnsw.save(str(saved))
        wanted = min(k, int(mask.sum()))
        count = max(4 * k, 64)
        while True:
            keys = np.asarray(self._hnsw.search(query_vector, count).keys, dtype=np.int64)
            keys = keys[mask[keys]]
            if len(keys) >= wanted or count >= len(self._vectors):
                return keys[:k]
            count *= 4

    def search(
        self,
        query: str,
        query_vector: NDArray[np.float32] | None,
        flt: SearchFilter,
        k: int,
        mode: SearchMode = "hybrid",
    ) -> list[SearchHit]:
        if k < 1:
            raise KnowledgeError("k", f"must be at least 1, got {k}")
        if not self._chunks:
            return []
        mask = self.mask(flt)
        depth = max(k * 4, 50)
        rankings: list[list[int]] = []
        if mode in ("hybrid", "vector"):
            if query_vector is None:
                raise KnowledgeError("query_vector", f"required for {mode} search")
            rows, _ = self.vector_ranking(query_vector, mask, depth)
            rankings.append(rows.tolist())
        if mode in ("hybrid", "bm25"):
            lexical = self._bm25.scores(query)
            rows = top_k_masked(lexical, mask & (lexical > 0), depth)
            rankings.append(rows.tolist())
        fused = reciprocal_rank_fusion(rankings)
        best = sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:k]
        return [
            SearchHit(
                doc_id=self._chunks[row].meta.doc_id,
                chunk_id=self._chunks[row].chunk_id,
                score=round(score, 6),
                text=self._chunks[row].text,
                meta=self._chunks[row].meta,
            )
            for row, score in best
        ]

    def describe(self) -> dict[str, Any]:
        return {
            "chunks": len(self._chunks),
            "dim": int(self._vectors.shape[1]) if self._vectors.size else 0,
        }
