"""The knowledge-index port and its embedded default (numpy exact search, usearch HNSW, BM25, RRF).

Filters become a boolean mask over the chunks before any ranking, so a top-k never contains a
chunk the caller may not see and never comes back short because such chunks were cut after it.

On disk every change is written as a new generation (`gen-*/chunks.jsonl`, `vectors.npy` and
the HNSW graph) and then published by atomically replacing the one-line file `CURRENT`, so a
reader in another process never sees chunks of one generation with vectors of another, and
`refresh()` (one small file read) picks up what another process ingested.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
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
_CURRENT = "CURRENT"
# Older generations stay a while for readers that are still loading them.
_KEEP_GENERATIONS = 3
_LOAD_ATTEMPTS = 5
_NO_DATE_LOW = np.iinfo(np.int64).min
_NO_DATE_HIGH = np.iinfo(np.int64).max


class KnowledgeIndex(Protocol):
    """Where chunks and their vectors live; the embedded store and Weaviate implement it."""

    def upsert(self, chunks: Sequence[Chunk], vectors: NDArray[np.float32]) -> None: ...

    def delete_documents(self, doc_ids: Iterable[str]) -> int: ...

    def replace_documents(
        self, doc_ids: Iterable[str], chunks: Sequence[Chunk], vectors: NDArray[np.float32]
    ) -> int:
        """Delete these documents and add the chunks as one change; returns chunks removed."""
        ...

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
    """Exact cosine search in numpy, with an HNSW graph (usearch) once the index is large.

    Safe to share between threads: searches, writes and reloads take one lock.
    """

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
        self._lock = threading.RLock()
        self._chunks: list[Chunk] = []
        self._vectors = np.zeros((0, 0), dtype=np.float32)
        self._derived_ready = False
        self._hnsw: Any = None
        # The generation loaded from or written to disk ("" = nothing on disk yet); counts up
        # in memory so callers can tell that the content changed.
        self._generation = ""
        self._changes = 0
        if directory is not None:
            self._load_latest(directory)

    @property
    def generation(self) -> str:
        """Changes whenever the content does: after a write here or a reload from disk."""
        with self._lock:
            return f"{self._generation}:{self._changes}"

    # -- writing -------------------------------------------------------------------------------
    def upsert(self, chunks: Sequence[Chunk], vectors: NDArray[np.float32]) -> None:
        self.replace_documents((), chunks, vectors)

    def delete_documents(self, doc_ids: Iterable[str]) -> int:
        return self.replace_documents(doc_ids, [], np.zeros((0, 0), dtype=np.float32))

    def replace_documents(
        self, doc_ids: Iterable[str], chunks: Sequence[Chunk], vectors: NDArray[np.float32]
    ) -> int:
        """Delete the documents and upsert the chunks as one generation, so no reader ever sees
        a re-ingested document missing; writers in other processes wait for each other and
        each starts from the latest published generation."""
        if len(chunks) != len(vectors):
            raise KnowledgeError("vectors", f"{len(vectors)} vectors for {len(chunks)} chunks")
        doomed = set(doc_ids)
        with self._lock, self._write_lock():
            if self._dir is not None:
                self._reload_if_newer(self._dir)
            keep = [i for i, c in enumerate(self._chunks) if c.meta.doc_id not in doomed]
            removed = len(self._chunks) - len(keep)
            if chunks:
                new_ids = {c.chunk_id for c in chunks}
                keep = [i for i in keep if self._chunks[i].chunk_id not in new_ids]
                vectors = np.asarray(vectors, dtype=np.float32)
                if self._vectors.size and self._vectors.shape[1] != vectors.shape[1]:
                    raise KnowledgeError(
                        "vectors",
                        f"dimension {vectors.shape[1]} differs from the index's"
                        f" {self._vectors.shape[1]}; re-ingest everything after changing the"
                        " embedder",
                    )
            if not chunks and not removed:
                return 0
            kept = self._vectors[keep] if self._chunks else self._vectors
            self._chunks = [self._chunks[i] for i in keep] + list(chunks)
            if not chunks:
                self._vectors = kept
            else:
                self._vectors = np.vstack([kept, vectors]) if kept.size else vectors
            self._changed()
            return removed

    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        if self._dir is None:
            yield
            return
        self._dir.mkdir(parents=True, exist_ok=True)
        with (self._dir / "LOCK").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def all_chunks(self) -> list[Chunk]:
        with self._lock:
            return list(self._chunks)

    def _changed(self) -> None:
        self._derived_ready = False
        self._hnsw = None
        self._changes += 1
        if self._dir is not None:
            self._generation = self._save(self._dir)
            self._changes = 0

    # -- persistence ---------------------------------------------------------------------------
    def _generation_dir(self) -> Path | None:
        if self._dir is None:
            return None
        return self._dir / self._generation if self._generation else self._dir

    def _save(self, directory: Path) -> str:
        """Write a new generation and publish it; returns its name."""
        directory.mkdir(parents=True, exist_ok=True)
        name = f"gen-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        target = directory / name
        target.mkdir()
        with (target / "chunks.jsonl").open("w", encoding="utf-8") as out:
            for chunk in self._chunks:
                out.write(chunk.model_dump_json() + "\n")
        np.save(target / "vectors.npy", self._vectors)
        pointer = directory / f"{_CURRENT}.{name}.tmp"
        pointer.write_text(name + "\n", encoding="utf-8")
        os.replace(pointer, directory / _CURRENT)
        self._prune(directory, name)
        return name

    @staticmethod
    def _prune(directory: Path, current: str) -> None:
        generations = sorted(p for p in directory.glob("gen-*") if p.is_dir())
        for old in generations[:-_KEEP_GENERATIONS]:
            if old.name != current:
                shutil.rmtree(old, ignore_errors=True)
        # The flat layout of earlier versions is superseded by the first generation.
        for legacy in ("chunks.jsonl", "vectors.npy", _HNSW_FILE):
            (directory / legacy).unlink(missing_ok=True)

    @staticmethod
    def _published(directory: Path) -> str:
        try:
            return (directory / _CURRENT).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return ""

    def _load_latest(self, directory: Path) -> bool:
        """Load the published generation (or the flat legacy files); False when nothing is there."""
        for attempt in range(_LOAD_ATTEMPTS):
            name = self._published(directory)
            source = directory / name if name else directory
            if not (source / "chunks.jsonl").exists():
                if name and attempt + 1 < _LOAD_ATTEMPTS:
                    continue  # pruned by a writer between the two reads: read CURRENT again
                if name:
                    raise KnowledgeError(str(directory), f"generation {name} is missing")
                return False
            try:
                chunks, vectors = self._read(source)
            except FileNotFoundError:
                if attempt + 1 < _LOAD_ATTEMPTS:
                    continue
                raise
            self._chunks, self._vectors = chunks, vectors
            self._generation, self._changes = name, 0
            self._derived_ready = False
            self._hnsw = None
            return True
        return False

    @staticmethod
    def _read(source: Path) -> tuple[list[Chunk], NDArray[np.float32]]:
        with (source / "chunks.jsonl").open(encoding="utf-8") as lines:
            chunks = [Chunk.model_validate_json(line) for line in lines if line.strip()]
        vectors = np.load(source / "vectors.npy").astype(np.float32, copy=False)
        if len(vectors) != len(chunks):
            raise KnowledgeError(str(source), "chunks.jsonl and vectors.npy disagree in length")
        return chunks, vectors

    def refresh(self) -> bool:
        """Reload when another process published a newer generation; True if it did.

        Costs one read of the small `CURRENT` file when nothing changed.
        """
        if self._dir is None:
            return False
        with self._lock:
            return self._reload_if_newer(self._dir)

    def _reload_if_newer(self, directory: Path) -> bool:
        published = self._published(directory)
        if not published or published == self._generation:
            return False
        return self._load_latest(directory)

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
        with self._lock:
            return self._mask(flt)

    def _mask(self, flt: SearchFilter) -> NDArray[np.bool_]:
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
        with self._lock:
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
            folder = self._generation_dir()
            saved = folder / _HNSW_FILE if folder is not None else None
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
        with self._lock:
            return self._search(query, query_vector, flt, k, mode)

    def _search(
        self,
        query: str,
        query_vector: NDArray[np.float32] | None,
        flt: SearchFilter,
        k: int,
        mode: SearchMode,
    ) -> list[SearchHit]:
        if not self._chunks:
            return []
        mask = self._mask(flt)
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
        with self._lock:
            return {
                "chunks": len(self._chunks),
                "dim": int(self._vectors.shape[1]) if self._vectors.size else 0,
                "generation": self._generation,
            }
