"""Models by task, how to reach them, how fast they may be called, and the response cache.

A model call is made inside a Temporal activity, so the client never retries on its own
(Temporal does, with the activity's policy). Each model has a timeout and a request rate; the
rate is shared by every call in the process, whichever thread or event loop makes it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from pydantic_ai.exceptions import ModelAPIError, ModelHTTPError
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models import Model, ModelRequestParameters
from pydantic_ai.models.instrumented import InstrumentationSettings, InstrumentedModel
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings

from tools.content.errors import ContentError
from tools.content.models import CopyDraft, TokenUsage
from tools.content.offline_model import OFFLINE_MODEL_NAME, offline_model
from tools.content.prompts import Task

# EUR per million tokens (input, output); settings add to and override these. A model with no
# price is recorded at zero cost, and the ledger shows its tokens so the gap is visible.
DEFAULT_PRICES_EUR_PER_MTOK: dict[str, tuple[float, float]] = {
    OFFLINE_MODEL_NAME: (0.0, 0.0),
    "gpt-4o-mini": (0.14, 0.55),
    "gpt-4o": (2.3, 9.2),
    "gpt-4.1-mini": (0.37, 1.47),
}


class ModelLimit(BaseModel):
    """Per model: how long one request may take and how many may start per minute."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timeout_s: float | None = Field(default=None, gt=0, le=3600)
    requests_per_minute: float | None = Field(default=None, gt=0)


@dataclass(frozen=True)
class ModelConnection:
    """Where an OpenAI-compatible model is served (OpenAI, Azure, vLLM, Ollama, llama.cpp)."""

    base_url: str = ""
    api_key: str = field(default="", repr=False)
    timeout_s: float = 60.0
    limits: Mapping[str, ModelLimit] = field(default_factory=dict)
    # Prompt and completion text in the spans: off, as personal data must never reach a trace.
    record_content: bool = False


def is_offline(name: str) -> bool:
    return name in ("", "offline", OFFLINE_MODEL_NAME)


def model_name(name: str) -> str:
    return OFFLINE_MODEL_NAME if is_offline(name) else name.removeprefix("openai:")


class RequestRate:
    """A token bucket: `per_minute` requests a minute, bursts of at most one minute's worth."""

    def __init__(self, per_minute: float) -> None:
        self._rate = per_minute / 60.0
        self._capacity = max(1.0, per_minute / 60.0)
        self._tokens = self._capacity
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Takes one request's token and returns how long to wait before sending it."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self._capacity, self._tokens + (now - self._at) * self._rate)
            self._at = now
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self._rate


class RateLimitedModel(WrapperModel):
    def __init__(self, wrapped: Model, rate: RequestRate) -> None:
        super().__init__(wrapped)
        self._request_rate = rate

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        wait = self._request_rate.reserve()
        if wait > 0:
            await asyncio.sleep(wait)
        return await super().request(messages, model_settings, model_request_parameters)


def check_model_name(name: str, connection: ModelConnection) -> None:
    if is_offline(name):
        return
    if not name.startswith("openai:") or not name.removeprefix("openai:").strip():
        raise ContentError("llm_model", f"{name!r}: use 'offline' or 'openai:<model name>'")
    if not connection.api_key and not connection.base_url:
        raise ContentError(
            "llm_model", f"{name!r} needs LIFTLOOP_LLM_API_KEY or LIFTLOOP_LLM_BASE_URL"
        )


def build_model(name: str, connection: ModelConnection) -> Model:
    """`offline` → the deterministic composer; `openai:NAME` → a chat model at the connection."""
    check_model_name(name, connection)
    if is_offline(name):
        return offline_model()
    from openai import AsyncOpenAI
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    bare = model_name(name)
    limit = connection.limits.get(bare, ModelLimit())
    client = AsyncOpenAI(
        base_url=connection.base_url or None,
        # A local server (vLLM, Ollama) takes any key; the client insists on one.
        api_key=connection.api_key or "unused",
        max_retries=0,
        timeout=limit.timeout_s or connection.timeout_s,
    )
    return OpenAIChatModel(bare, provider=OpenAIProvider(openai_client=client))


class ModelRouter:
    """The small model for subject lines, the main model for long copy and planning."""

    def __init__(
        self,
        main: str = "offline",
        small: str = "",
        *,
        connection: ModelConnection | None = None,
        factory: Callable[[str], Model] | None = None,
        prices: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        self._names: dict[Task, str] = {"long_copy": main, "subject_line": small or main}
        self.connection = connection or ModelConnection()
        self._factory = factory or (lambda name: build_model(name, self.connection))
        self._prices = {**DEFAULT_PRICES_EUR_PER_MTOK, **(prices or {})}
        self._rates: dict[str, RequestRate] = {}
        self._lock = threading.Lock()
        if factory is None:  # a misconfigured model fails where it is configured, not mid-run
            for name in self._names.values():
                check_model_name(name, self.connection)

    def name_for(self, task: Task) -> str:
        return model_name(self._names[task])

    def offline(self, task: Task) -> bool:
        return is_offline(self._names[task])

    def model_for(self, task: Task) -> Model:
        """A new client per call: an async HTTP client must not outlive the event loop it was
        made in, and each activity runs its own. The request rate is per model and shared."""
        name = self.name_for(task)
        model: Model = self._factory(self._names[task])
        limit = self.connection.limits.get(name, ModelLimit())
        if limit.requests_per_minute:
            with self._lock:
                rate = self._rates.setdefault(name, RequestRate(limit.requests_per_minute))
            model = RateLimitedModel(model, rate)
        settings = InstrumentationSettings(include_content=self.connection.record_content)
        return InstrumentedModel(model, settings)

    @asynccontextmanager
    async def session(self, task: Task) -> AsyncIterator[Model]:
        """A model for the calls of one event loop; its HTTP client is closed in that loop."""
        model = self.model_for(task)
        try:
            yield model
        finally:
            await close_model(model)

    def cost_eur(self, model: str, input_tokens: int, output_tokens: int) -> float:
        price_in, price_out = self._prices.get(model, (0.0, 0.0))
        return round((input_tokens * price_in + output_tokens * price_out) / 1e6, 8)


def model_error_reason(exc: ModelAPIError) -> str:
    """One line for a person: the status a model server answered, or that it was unreachable."""
    if isinstance(exc, ModelHTTPError):
        code = f", {exc.provider_error_code}" if exc.provider_error_code else ""
        return f"the model server answered {exc.status_code}{code}"
    return f"the model server could not be reached ({type(exc).__name__})"


async def close_model(model: Model) -> None:
    """Closes the HTTP client under a model (through its wrappers), if it has one."""
    while isinstance(model, WrapperModel):
        model = model.wrapped
    client = getattr(model, "client", None)
    close = getattr(client, "close", None)
    if close is not None:
        await close()


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
            # Written whole, then renamed: a reader in another worker never sees half a file.
            tmp = self._dir / f".{key}.{threading.get_ident()}.tmp"
            tmp.write_text(value.model_dump_json(), encoding="utf-8")
            tmp.replace(self._dir / f"{key}.json")
