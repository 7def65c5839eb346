from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from tools.rag.models import Chunk, ChunkMetadata, SearchFilter

WEAVIATE_URL = os.environ.get("LIFTLOOP_WEAVIATE_URL", "")
pytestmark = pytest.mark.skipif(
    not WEAVIATE_URL, reason="LIFTLOOP_WEAVIATE_URL is not set: no Weaviate server to test against"
)


@pytest.fixture()
def weaviate_index() -> Iterator[object]:
    from tools.rag.weaviate_index import WeaviateIndex

    name = f"LiftloopTest{uuid.uuid4().hex[:8]}"
    index = WeaviateIndex.connect(WEAVIATE_URL, collection=name)
    yield index
    index._client.collections.delete(name)
    index.close()


def _chunk(n: int, groups: tuple[str, ...], text: str) -> Chunk:
    meta = ChunkMetadata(
        doc_id=f"d{n}",
        doc_version="1",
        source="s",
        kind="guideline",
        groups=groups,
        content_hash=f"h{n}",
    )
    return Chunk(chunk_id=f"d{n}#0", text=text, meta=meta)


def test_weaviate_hybrid_search_respects_permissions(weaviate_index: object) -> None:
    from tools.rag.weaviate_index import WeaviateIndex

    assert isinstance(weaviate_index, WeaviateIndex)
    chunks = [
        _chunk(1, ("trading",), "margin target on jackets is 42 percent"),
        _chunk(2, ("public",), "rain jackets with taped seams"),
    ]
    vectors = np.eye(2, 8, dtype=np.float32)
    weaviate_index.upsert(chunks, vectors)
    public = weaviate_index.search("margin jackets", vectors[0], SearchFilter(), k=5)
    assert [h.doc_id for h in public] == ["d2"]
    trading = weaviate_index.search(
        "margin jackets", vectors[0], SearchFilter(groups=("trading",)), k=5
    )
    assert trading[0].doc_id == "d1"
    assert weaviate_index.delete_documents(["d1"]) == 1
