from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pytest

from tools.rag.bm25 import BM25Index, tokenize
from tools.rag.errors import KnowledgeError
from tools.rag.index import EmbeddedIndex, reciprocal_rank_fusion, top_k_masked
from tools.rag.models import Chunk, ChunkMetadata, SearchFilter


def _chunk(n: int, **meta: object) -> Chunk:
    fields = {
        "doc_id": f"d{n}",
        "doc_version": "1",
        "source": "s",
        "kind": "guideline",
        "content_hash": f"h{n}",
        **meta,
    }
    return Chunk(chunk_id=f"d{n}#0", text=f"text {n}", meta=ChunkMetadata.model_validate(fields))


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_bm25_matches_the_okapi_formula() -> None:
    docs = ["rain jacket rain", "down jacket", "hiking boot"]
    index = BM25Index(docs, k1=1.5, b=0.75)
    scores = index.scores("rain")
    # Okapi BM25 with the +1 (non-negative) idf: idf = ln(1 + (N - df + 0.5) / (df + 0.5)).
    idf = np.log1p((3 - 1 + 0.5) / (1 + 0.5))
    avg = (3 + 2 + 2) / 3
    expected = idf * 2 * 2.5 / (2 + 1.5 * (1 - 0.75 + 0.75 * 3 / avg))
    assert scores[0] == pytest.approx(expected)
    assert scores[1] == scores[2] == 0
    assert tokenize("Die Jacke und der Regen") == ["jacke", "regen"]


def test_reciprocal_rank_fusion_rewards_agreement() -> None:
    fused = reciprocal_rank_fusion([[1, 2, 3], [2, 1, 4]])
    assert fused[1] == fused[2] > fused[3] > 0
    assert max(fused, key=lambda key: fused[key]) in (1, 2)


def test_top_k_masked_never_returns_masked_rows() -> None:
    scores = np.array([9.0, 8.0, 7.0, 6.0, 5.0])
    mask = np.array([False, True, False, True, True])
    assert top_k_masked(scores, mask, 2).tolist() == [1, 3]


def test_filters_apply_before_top_k_so_results_are_not_short() -> None:
    rng = np.random.default_rng(0)
    query = _unit(rng.normal(size=(1, 16)))[0]
    restricted = _unit(query + 0.01 * rng.normal(size=(20, 16)))  # the 20 nearest rows
    public = _unit(rng.normal(size=(30, 16)))
    chunks = [_chunk(i, groups=("trading",)) for i in range(20)]
    chunks += [_chunk(100 + i, groups=("public",)) for i in range(30)]
    index = EmbeddedIndex()
    index.upsert(chunks, np.vstack([restricted, public]))
    hits = index.search("text", query, SearchFilter(groups=("public",)), k=10, mode="vector")
    assert len(hits) == 10
    assert all(h.meta.groups == ("public",) for h in hits)
    trading = index.search("text", query, SearchFilter(groups=("trading",)), k=5, mode="vector")
    assert {h.doc_id for h in trading} <= {f"d{i}" for i in range(20)}


def test_market_language_kind_and_freshness_filters() -> None:
    chunks = [
        _chunk(1, market="DE", language="de"),
        _chunk(2, market="*", language="de"),
        _chunk(3, market="AT", language="de"),
        _chunk(4, language="en", valid_to=date(2020, 1, 1)),
        _chunk(5, language="en", valid_from=date(2999, 1, 1)),
        _chunk(6, language="en", kind="faq"),
    ]
    index = EmbeddedIndex()
    index.upsert(chunks, _unit(np.eye(6, dtype=np.float32) + 0.1))
    de = index.mask(SearchFilter(market="DE", language="de"))
    assert de.tolist() == [True, True, False, False, False, False]
    en_today = index.mask(SearchFilter(language="en"))
    assert en_today.tolist() == [False, False, False, False, False, True]
    assert index.mask(SearchFilter(language="en", as_of=date(2019, 6, 1)))[3]
    assert index.mask(SearchFilter(kinds=("faq",))).sum() == 1


def test_index_persists_and_replaces_documents(tmp_path: Path) -> None:
    index = EmbeddedIndex(tmp_path)
    index.upsert([_chunk(1), _chunk(2)], _unit(np.eye(2, 4, dtype=np.float32) + 0.1))
    assert index.delete_documents(["d1"]) == 1
    reloaded = EmbeddedIndex(tmp_path)
    assert [c.chunk_id for c in reloaded.all_chunks()] == ["d2#0"]
    with pytest.raises(KnowledgeError, match=r"^vectors:"):
        reloaded.upsert([_chunk(3)], np.ones((1, 8), dtype=np.float32))


def test_hnsw_path_agrees_with_exact_search() -> None:
    rng = np.random.default_rng(1)
    vectors = _unit(rng.normal(size=(3000, 32)))
    chunks = [_chunk(i, groups=("public",) if i % 2 else ("trading",)) for i in range(3000)]
    exact = EmbeddedIndex(hnsw_min_size=10**9)
    approx = EmbeddedIndex(hnsw_min_size=1000)
    exact.upsert(chunks, vectors)
    approx.upsert(chunks, vectors)
    flt = SearchFilter(groups=("public",))
    mask = exact.mask(flt)
    recalls = []
    for q in _unit(rng.normal(size=(20, 32))):
        truth, _ = exact.vector_ranking(q, mask, 10)
        found, _ = approx.vector_ranking(q, mask, 10)
        assert all(mask[found])
        recalls.append(len(set(truth.tolist()) & set(found.tolist())) / 10)
    assert np.mean(recalls) >= 0.9


def test_hnsw_graph_is_saved_and_dropped_on_change(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    vectors = _unit(rng.normal(size=(300, 16)))
    index = EmbeddedIndex(tmp_path, hnsw_min_size=100)
    index.upsert([_chunk(i) for i in range(300)], vectors)
    everyone = SearchFilter()
    first, _ = index.vector_ranking(vectors[7], index.mask(everyone), 5)

    def current() -> Path:
        return tmp_path / (tmp_path / "CURRENT").read_text().strip()

    assert first[0] == 7 and (current() / "hnsw.usearch").exists()
    reopened = EmbeddedIndex(tmp_path, hnsw_min_size=100)
    again, _ = reopened.vector_ranking(vectors[7], reopened.mask(everyone), 5)
    assert again.tolist() == first.tolist()
    reopened.delete_documents(["d7"])
    assert not (current() / "hnsw.usearch").exists()
