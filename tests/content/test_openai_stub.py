"""The copywriter over HTTP: pydantic-ai's OpenAI model against the local chat-completions stub."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI
from pydantic_ai import Agent
from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

from agents.copywriter import Copywriter
from tests.openai_stub import OpenAIStub, RecordedRequest
from tools.content import VariantRequest
from tools.content.llm import ModelRouter, ResponseCache
from tools.content.offline_model import REVISION_MARK
from tools.rag.knowledge_base import KnowledgeBase

MODEL = "gpt-4o-mini"
REQUEST = VariantRequest(
    campaign_id="winback-en",
    arm="ten_off",
    channel="email",
    language="en",
    discount_pct=10,
    offer_end="Sunday",
    product_focus="rain jacket",
    brief="warm, no pressure",
)


@pytest.fixture()
async def client(openai_stub: OpenAIStub) -> AsyncIterator[AsyncOpenAI]:
    # No retries in the client, as in production (tools/content/llm.py): Temporal retries.
    async with AsyncOpenAI(
        base_url=openai_stub.base_url, api_key=openai_stub.api_key, max_retries=0
    ) as client:
        yield client


def _writer(kb: KnowledgeBase, client: AsyncOpenAI) -> Copywriter:
    # A client per model session, as in production: the copywriter closes it after each variant.
    def model(name: str) -> OpenAIChatModel:
        fresh = AsyncOpenAI(base_url=str(client.base_url), api_key=client.api_key, max_retries=0)
        return OpenAIChatModel(name, provider=OpenAIProvider(openai_client=fresh))

    router = ModelRouter(MODEL, factory=model)
    return Copywriter(kb, router=router, cache=ResponseCache())


def _user_texts(request: RecordedRequest) -> list[str]:
    return [str(m["content"]) for m in request.body["messages"] if m["role"] == "user"]


async def test_copywriter_over_http_writes_what_the_offline_model_writes(
    content_kb: KnowledgeBase, openai_stub: OpenAIStub, client: AsyncOpenAI
) -> None:
    writer = _writer(content_kb, client)
    variant = await writer.generate(REQUEST)

    assert variant.guard.passed and not variant.escalated and variant.attempts == 1
    known = {c.meta.doc_id for c in content_kb.index.all_chunks()}
    assert variant.citations and set(variant.citations) <= known
    assert variant.model == MODEL and variant.usage.requests == 1
    assert variant.usage.input_tokens == openai_stub.prompt_tokens > 0
    assert variant.usage.output_tokens == openai_stub.completion_tokens > 0
    assert variant.usage.cost_eur == writer.router.cost_eur(
        MODEL, openai_stub.prompt_tokens, openai_stub.completion_tokens
    )
    offline = await Copywriter(content_kb).generate(REQUEST)
    assert (variant.subject, variant.body, variant.citations) == (
        offline.subject,
        offline.body,
        offline.citations,
    )

    [sent] = openai_stub.requests
    assert sent.method == "POST" and sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {openai_stub.api_key}"
    assert sent.body["model"] == MODEL and not sent.body.get("stream")
    [tool] = sent.body["tools"]
    schema = tool["function"]["parameters"]
    assert {"subject", "body_blocks", "call_to_action", "citations"} <= schema["properties"].keys()
    assert json.loads(sent.raw) == sent.body


async def test_a_wrong_discount_on_the_first_answer_is_revised(
    content_kb: KnowledgeBase, openai_stub: OpenAIStub, client: AsyncOpenAI
) -> None:
    def plant_discount(draft: dict[str, Any]) -> dict[str, Any]:
        planted = {"kind": "offer", "text": "Today only: 50 % off everything."}
        return {**draft, "body_blocks": [*draft["body_blocks"], planted]}

    openai_stub.tamper(plant_discount)
    variant = await _writer(content_kb, client).generate(REQUEST)

    assert variant.guard.passed and variant.attempts == 2 and variant.usage.requests == 2
    assert "50 %" not in variant.body and "10 %" in variant.body
    first, second = openai_stub.requests
    assert not any(REVISION_MARK in t for t in _user_texts(first))
    [revision] = [t for t in _user_texts(second) if t.startswith(REVISION_MARK)]
    assert "offer.discount_mismatch" in revision and "50 %" in revision
    # The first answer and its tool result travel in the history of the revision request.
    roles = [m["role"] for m in second.body["messages"]]
    assert "tool" in roles and roles.index("assistant") < roles.index("tool")
    assert variant.usage.input_tokens == openai_stub.prompt_tokens


async def test_rate_limit_surfaces_once_without_client_retries(
    content_kb: KnowledgeBase, openai_stub: OpenAIStub, client: AsyncOpenAI
) -> None:
    writer = _writer(content_kb, client)
    openai_stub.fail_next(429, retry_after=7)
    with pytest.raises(ModelHTTPError) as raised:
        await writer.generate(REQUEST)
    assert raised.value.status_code == 429
    assert raised.value.headers is not None and raised.value.headers["retry-after"] == "7"
    assert (
        isinstance(raised.value.body, dict) and raised.value.body["code"] == "rate_limit_exceeded"
    )
    assert len(openai_stub.requests) == 1
    # One failure was scripted: the next attempt (Temporal's retry, in production) succeeds.
    assert (await writer.generate(REQUEST)).guard.passed
    assert len(openai_stub.requests) == 2


async def test_server_errors_are_http_errors_for_as_many_requests_as_scripted(
    openai_stub: OpenAIStub, client: AsyncOpenAI
) -> None:
    openai_stub.fail_next(503, times=2)
    messages: list[Any] = [{"role": "user", "content": "hello"}]
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as raised:
            await client.chat.completions.create(model=MODEL, messages=messages)
        assert raised.value.status_code == 503 and raised.value.type == "server_error"
    answer = await client.chat.completions.create(model=MODEL, messages=messages)
    assert answer.choices[0].message.content and answer.usage is not None
    assert answer.usage.total_tokens == openai_stub.prompt_tokens + openai_stub.completion_tokens


async def test_a_wrong_key_gets_401(openai_stub: OpenAIStub) -> None:
    async with AsyncOpenAI(
        base_url=openai_stub.base_url, api_key="sk-wrong-key-0000", max_retries=0
    ) as wrong:
        with pytest.raises(openai.AuthenticationError) as raised:
            await wrong.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hello"}]
            )
    assert raised.value.status_code == 401
    assert (raised.value.type, raised.value.code) == ("invalid_request_error", "invalid_api_key")
    assert "sk-wrong-key-0000" not in raised.value.message
    assert len(openai_stub.requests) == 1 and openai_stub.prompt_tokens == 0


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, 400, "model"),
        ({"model": MODEL}, 400, "messages"),
        (
            {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True},
            400,
            "stream",
        ),
        (
            {"model": MODEL, "messages": [{"role": "robot", "content": "hi"}]},
            400,
            "messages[0].role",
        ),
        (
            {"model": MODEL, "messages": [{"role": "tool", "tool_call_id": "x", "content": "1"}]},
            400,
            "messages.[0].role",
        ),
    ],
)
def test_invalid_requests_are_refused_naming_the_parameter(
    openai_stub: OpenAIStub, body: dict[str, Any], status: int, param: str
) -> None:
    headers = {"authorization": f"Bearer {openai_stub.api_key}"}
    answer = httpx.post(f"{openai_stub.base_url}/chat/completions", json=body, headers=headers)
    assert answer.status_code == status
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert set(error) == {"message", "type", "param", "code"}
    missing = httpx.get(f"{openai_stub.base_url}/models/none", headers=headers)
    assert missing.status_code == 404 and "error" in missing.json()


async def test_a_scripted_responder_drives_an_agent_through_a_tool_call(
    openai_stub: OpenAIStub, client: AsyncOpenAI
) -> None:
    def planner(body: dict[str, Any]) -> dict[str, Any]:
        results = [m["content"] for m in body["messages"] if m["role"] == "tool"]
        if not results:
            call = {"function": {"name": "segment_size", "arguments": {"segment": "lapsed"}}}
            return {"tool_calls": [call]}
        return {"content": f"the segment has {results[0]} people"}

    agent: Agent[None, str] = Agent(
        OpenAIChatModel(MODEL, provider=OpenAIProvider(openai_client=client))
    )

    @agent.tool_plain
    def segment_size(segment: str) -> int:
        return 4242 if segment == "lapsed" else 0

    openai_stub.respond(planner)
    result = await agent.run("how big is the lapsed segment?")
    assert result.output == "the segment has 4242 people"
    assert len(openai_stub.requests) == 2
    assert result.usage.input_tokens == openai_stub.prompt_tokens


async def test_a_slow_answer_times_the_client_out(openai_stub: OpenAIStub) -> None:
    openai_stub.delay_s = 0.5
    async with AsyncOpenAI(
        base_url=openai_stub.base_url, api_key=openai_stub.api_key, max_retries=0, timeout=0.1
    ) as impatient:
        with pytest.raises(openai.APITimeoutError):
            await impatient.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hello"}]
            )
    assert len(openai_stub.requests) == 1
