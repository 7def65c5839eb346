"""Model routing by task, response cache and token/cost accounting."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict
from pydantic_ai.models import Model

from tools.content.errors import ContentError
from tools.content.models import CopyDraft, TokenUsage
from tools.content.offline_model import OFFLINE_MODEL_NAME, offline_model
from tools.content.prompts import Task

# EUR per million tokens (input, output). Unknown models are recorded at zero cost and should be
# added here or passed to the router; the offline model is free.
DEFAULT_PRICES_EUR_PER_MTOK: dict[str, tuple[float, float]] = {
    OFFLINE_MODEL_NAME: (0.0, 0.0),
    "gpt-4o-mini": (0.14, 0.55),
    "gpt-4o": (2.3, 9.2),
    "gpt-4.1-mini": (0.37, 1.47),
}


def build_model(name: str) -> Model:
    """`offline` → the deterministic composer; anything else → an OpenAI-compatible chat model."""
    if name in ("", "offline", OFFLINE_MODEL_NAME):
        return offline_model()
    from openai import AsyncOpenAI
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    base_url = os.environ.get("OPENAI_BASE_URL") or None
    api_key = os.environ.get("OPENAI_API_KEY") or ""
    if not api_key and base_url is None:
        raise ContentError("llm_model", f"{name!r} needs OPENAI_API_KEY or OPENAI_BASE_URL")
    # Temporal retries activities, so the client itself must not retry (DESIGN convention 2).
    client = AsyncOpenAI(base_url=base_url, api_key=api_key or "unused", max_retries=0)
    return OpenAIChatModel(
        name.removeprefix("openai:"), provider=OpenAIProvider(openai_client=client)
    )


class ModelRouter:
    """A small model for subject lines, the main model for long copy."""

    def __init__(
        self,
        main: str = "offline",
        small: str = "",
        *,
        factory: Callable[[str], Model] = build_model,
        prices: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        self._names: dict[Task, str] = {"long_copy": main, "subject_line": small or main}
        self._factory = factory
        self._models: dict[str, Model] = {}
        self._prices = dict(DEFAULT_PRICES_EUR_PER_MTOK if prices is None else prices)

    def name_for(self, task: Task) -> str:
        name = self._names[task]
        return OFFLINE_MODEL_NAME if name in ("", "offline") else name.removeprefix("openai:")

    def model_for(self, task: Task) -> Model:
        name = self._names[task]
        if name not in self._models:
            self._models[name] = self._factory(name)
        return self._models[name]

    def cost_eur(self, model_name: str, input_tokens: int, output_tokens: int) -> float:
        price_in, price_out = self._prices.get(model_name, (0.0, 0.0))
        return round((input_tokens * price_in + output_tokens * price_out) / 1e6, 8)


class CachedResponse(BaseModel):
    model_config = ConfigDict(frozen=True)

    draft: CopyDraft
    usage: TokenUsage
    attempts: int


def cache_key(template_id: str, template_version: str, model: str, prompt: str) -> str:
    material = json.dumps([template_id, template_version, model, prompt], ensure_ascii=False)
    return hashlib.sha256(material.encode()).hexdigest()


class ResponseCache:
    """Guarded drafts keyed by template version, rendered inputs and model; files or memory."""

    def __init__(self, directory: Path | None = None) -> None:
        self._dir = directory
        self._memory: dict[str, CachedResponse] = {}

    def get(self, key: str) -> CachedResponse | None:
        if key in self._memory:
            return self._memory[key]
        if self._dir is not None and (self._dir / f"{key}.json").exists():
            cached = CachedResponse.model_validate_json((self._dir / f"{key}.json").read_text())
            self._memory[key] = cached
            return cached
        return None

    def put(self, key: str, value: CachedResponse) -> None:
        self._memory[key] = value
        if self._dir is not None:
            self._dir.mkdir(parents=True, exist_ok=True)
            (self._dir / f"{key}.json").write_text(value.model_dump_json(), encoding="utf-8")


class UsageEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    job_id: str
    campaign_id: str
    channel: str
    template_id: str
    model: str
    input_tokens: int
    output_tokens: int
    requests: int
    cost_eur: float
    cached: bool


GroupBy = Literal["job_id", "campaign_id", "channel", "model"]


class CostLedger:
    """Token and cost accounting; appended to a JSON Lines file when a path is given."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._entries: list[UsageEntry] = []
        if path is not None and path.exists():
            self._entries = [
                UsageEntry.model_validate_json(line)
                for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip()
            ]

    def record(self, entry: UsageEntry) -> None:
        with self._lock:
            self._entries.append(entry)
            if self._path is not None:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                with self._path.open("a", encoding="utf-8") as out:
                    out.write(entry.model_dump_json() + "\n")

    def totals(self, by: GroupBy) -> dict[str, TokenUsage]:
        sums: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0, 0.0])
        for e in self._entries:
            row = sums[getattr(e, by)]
            row[0] += e.input_tokens
            row[1] += e.output_tokens
            row[2] += e.requests
            row[3] += e.cost_eur
        return {
            key: TokenUsage(
                input_tokens=int(v[0]),
                output_tokens=int(v[1]),
                requests=int(v[2]),
                cost_eur=round(v[3], 8),
            )
            for key, v in sums.items()
        }
