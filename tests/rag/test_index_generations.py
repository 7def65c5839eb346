"""The embedded index on disk: one atomically published generation per change, reloads that
another process's ingest triggers, and writers that never lose each other's documents."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from tests.content.conftest import HashingEmbedder
from tools.rag.index import EmbeddedIndex
from tools.rag.knowledge_base import KnowledgeBase
from tools.rag.models import Chunk, ChunkMetadata


def _chunk(doc: str, n: int = 0, text: str = "") -> Chunk:
    meta = ChunkMetadata(
        doc_id=doc, doc_version="1", source="s", kind="guideline", content_hash=f"{doc}{n}{text}"
    )
    return Chunk(chunk_id=f"{doc}@1#{n:04d}", text=text or f"{doc} text {n}", meta=meta)


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(n, 8))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _kb(directory: Path) -> KnowledgeBase:
    return KnowledgeBase(
        EmbeddedIndex(directory / "index"),
        HashingEmbedder(),
        b"key",
        snapshot_dir=directory / "snapshots",
    )


def test_another_process_ingest_is_picked_up_by_refresh(tmp_path: Path) -> None:
    worker = _kb(tmp_path)
    editor = _kb(tmp_path)
    assert not worker.refresh()
    note = tmp_path / "note.md"
    note.write_text("---\ndoc_id: note\nversion: '1'\n---\n# Offer\nOld offer text.\n", "utf-8")
    first = editor.ingest([note])
    assert worker.refresh() and not worker.refresh()  # one small file read when unchanged
    assert worker.snapshot().snapshot_id == first.snapshot_id
    note.write_text("---\ndoc_id: note\nversion: '2'\n---\n# Offer\nNew offer text.\n", "utf-8")
    second = editor.ingest([note])
    assert worker.search("offer text", k=5)[0].text == "Old offer text."
    assert worker.refresh()
    assert [h.text for h in worker.search("offer text", k=5)] == ["New offer text."]
    assert worker.snapshot().snapshot_id == second.snapshot_id != first.snapshot_id


def test_a_reingest_is_published_as_one_generation(tmp_path: Path) -> None:
    index = EmbeddedIndex(tmp_path)
    index.upsert([_chunk("a"), _chunk("b")], _vectors(2))
    published = (tmp_path / "CURRENT").read_text().strip()
    # Replacing a document (delete + add) is one change, so no reader sees "a" missing.
    index.replace_documents(["a"], [_chunk("a", 1)], _vectors(1, 1))
    assert (tmp_path / "CURRENT").read_text().strip() != published
    reader = EmbeddedIndex(tmp_path)
    assert sorted(c.chunk_id for c in reader.all_chunks()) == ["a@1#0001", "b@1#0000"]
    assert len(list(tmp_path.glob("gen-*"))) == 2
    for n in range(5):
        index.upsert([_chunk("c", n)], _vectors(1, n))
    assert len(list(tmp_path.glob("gen-*"))) == 3  # older generations are pruned


def test_writers_in_two_processes_keep_each_others_documents(tmp_path: Path) -> None:
    first, second = EmbeddedIndex(tmp_path), EmbeddedIndex(tmp_path)
    first.upsert([_chunk("a")], _vectors(1))
    # `second` was opened before "a" existed; it reloads under the write lock before changing.
    second.upsert([_chunk("b")], _vectors(1, 1))
    assert sorted(c.meta.doc_id for c in EmbeddedIndex(tmp_path).all_chunks()) == ["a", "b"]


def test_legacy_flat_layout_still_loads_and_is_migrated(tmp_path: Path) -> None:
    chunks = [_chunk("a"), _chunk("b")]
    with (tmp_path / "chunks.jsonl").open("w", encoding="utf-8") as out:
        out.writelines(c.model_dump_json() + "\n" for c in chunks)
    np.save(tmp_path / "vectors.npy", _vectors(2))
    index = EmbeddedIndex(tmp_path)
    assert [c.meta.doc_id for c in index.all_chunks()] == ["a", "b"]
    index.delete_documents(["a"])
    assert not (tmp_path / "chunks.jsonl").exists() and (tmp_path / "CURRENT").exists()
    assert [c.meta.doc_id for c in EmbeddedIndex(tmp_path).all_chunks()] == ["b"]


def test_searches_and_reloads_in_threads_see_whole_generations(tmp_path: Path) -> None:
    writer = EmbeddedIndex(tmp_path)
    writer.upsert([_chunk("d", n, f"version 0 chunk {n}") for n in range(20)], _vectors(20))
    reader = EmbeddedIndex(tmp_path)
    errors: list[BaseException] = []
    stop = threading.Event()

    def search() -> None:
        from tools.rag.models import SearchFilter

        while not stop.is_set():
            try:
                reader.refresh()
                hits = reader.search("version chunk", _vectors(1, 9)[0], SearchFilter(), k=20)
                versions = {h.text.split()[1] for h in hits}
                assert len(versions) == 1, versions
            except BaseException as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=search) for _ in range(4)]
    for t in threads:
        t.start()
    for version in range(1, 15):
        chunks = [_chunk("d", n, f"version {version} chunk {n}") for n in range(20)]
        writer.replace_documents(["d"], chunks, _vectors(20, version))
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
