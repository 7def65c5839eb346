"""The Weaviate adapter against a recording stand-in for the client (no server needed).

It checks that the collection schema, objects, filters and queries are built with the real
weaviate-client v4 classes; test_weaviate.py runs the same adapter against a real server.
"""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace
from typing import Any

import numpy as np

from tools.rag.models import Chunk, ChunkMetadata, SearchFilter
from tools.rag.weaviate_index import WeaviateIndex


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.stored: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)


def _fake_client(recorder: _Recorder) -> Any:
    def insert_many(objects: list[Any]) -> Any:
        recorder.stored.extend(objects)
        return SimpleNamespace(has_errors=False, errors={})

    def query(kind: str) -> Any:
        def run(**kwargs: Any) -> Any:
            recorder.calls.append((kind, kwargs))
            hits = [
                SimpleNamespace(
                    properties=o.properties, metadata=SimpleNamespace(score=0.5, distance=None)
                )
                for o in recorder.stored
            ]
            return SimpleNamespace(objects=hits)

        return run

    collection = SimpleNamespace(
        data=SimpleNamespace(
            insert_many=insert_many,
            delete_many=lambda where: (
                recorder.calls.append(("delete", {"where": where})) or SimpleNamespace(successful=2)
            ),
        ),
        query=SimpleNamespace(
            hybrid=query("hybrid"), bm25=query("bm25"), near_vector=query("near")
        ),
        iterator=lambda: iter(SimpleNamespace(properties=o.properties) for o in recorder.stored),
    )
    collections = SimpleNamespace(
        exists=lambda name: False,
        create=lambda name, **kwargs: recorder.calls.append(("create", {"name": name, **kwargs})),
        get=lambda name: collection,
    )
    return SimpleNamespace(collections=collections, close=lambda: None)


def _chunk() -> Chunk:
    meta = ChunkMetadata(
        doc_id="claims",
        doc_version="1",
        source="claims.csv",
        kind="claims",
        market="DE",
        language="de",
        groups=("public", "legal"),
        valid_to=date(2027, 1, 1),
        content_hash="a" * 64,
    )
    return Chunk(chunk_id="claims@1#0000", text="Recycelte Daune.", meta=meta)


def test_adapter_builds_schema_objects_and_filtered_hybrid_queries() -> None:
    recorder = _Recorder()
    index = WeaviateIndex(_fake_client(recorder), collection="Knowledge")
    create = recorder.calls[0][1]
    names = {p.name for p in create["properties"]}
    assert {"groups", "market", "language", "valid_from", "valid_to", "meta_json"} <= names

    index.upsert([_chunk()], np.ones((1, 4), dtype=np.float32))
    stored = recorder.stored[0]
    assert stored.properties["groups"] == ["public", "legal"] and stored.vector == [1.0] * 4
    assert [c.chunk_id for c in index.all_chunks()] == ["claims@1#0000"]

    flt = SearchFilter(groups=("public",), market="DE", language="de", as_of=date(2026, 6, 1))
    hits = index.search("Daune", np.ones(4, dtype=np.float32), flt, k=3)
    kind, kwargs = recorder.calls[-1]
    assert kind == "hybrid" and kwargs["limit"] == 3 and kwargs["alpha"] == 0.5
    targets = {f.target: f.value for f in kwargs["filters"].filters}
    assert targets["groups"] == ["public"] and targets["market"] == ["DE", "*"]
    assert targets["language"] == "de"
    assert targets["valid_from"].date() == targets["valid_to"].date() == date(2026, 6, 1)
    assert hits[0].doc_id == "claims" and hits[0].meta.valid_to == date(2027, 1, 1)

    index.search("Daune", None, flt, k=2, mode="bm25")
    assert recorder.calls[-1][0] == "bm25"
    assert index.delete_documents(["claims"]) == 2
