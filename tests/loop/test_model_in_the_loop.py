"""The loop writes its copy with an OpenAI-compatible model over real HTTP (tests/openai_stub.py),
chosen by settings alone: nothing personal reaches the model, nothing unguarded reaches a
customer, and every token is in the ledger and in the spans."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy import update
from sqlmodel import col, select

from liftloop.knowledge import evaluation_copywriter, loop_copywriter
from liftloop.loop.prompt_releases import PromptReleases
from liftloop.loop.tables import OutboxMessage, Variant
from liftloop.settings import Settings
from liftloop.temporal import build_worker
from tests.loop.helpers import drive, spec, start
from tests.openai_stub import OpenAIStub
from tests.spans import named, record_spans, spans_in
from tools.cdp.tables import Profile
from tools.content.ledger import SqlCostLedger
from tools.content.offline_model import REVISION_MARK
from tools.content.releases import release_for
from tools.simulation.customers import generate_customers

PLANTED_NAME = "Quaxworth"
PLANTED_EMAIL = "zebulon.quaxworth@customers.example"
CURE = "This jacket cures colds."


def _with_a_cure(draft: dict[str, Any]) -> dict[str, Any]:
    blocks = [*draft["body_blocks"], {"kind": "paragraph", "text": CURE}]
    return {**draft, "body_blocks": blocks}


async def test_the_loop_generates_through_an_openai_compatible_server(  # type: ignore[no-untyped-def]
    dev_env, settings: Settings, engine, smtp, task_queue, openai_stub: OpenAIStub, tmp_path: Path
) -> None:
    settings = settings.model_copy(
        update={
            "llm_model": "openai:gpt-stub",
            "llm_base_url": openai_stub.base_url,
            "llm_api_key": SecretStr(openai_stub.api_key),
            "llm_prices_eur_per_mtok": {"gpt-stub": (1000.0, 2000.0)},
            "llm_max_revisions": 1,
        }
    )
    batch = f"b{uuid.uuid4().hex[:8]}"
    generate_customers(engine, 400, batch=batch, seed=3)
    with engine.begin() as conn:  # personal data that must never reach the model
        conn.execute(
            update(Profile)
            .where(col(Profile.id) == f"{batch}-1")
            .values(first_name=PLANTED_NAME, email=PLANTED_EMAIL)
        )
    # The release gate, as the generate stage runs it: the prompt version is evaluated through
    # the model once, recorded, and from then on released for it.
    releases = PromptReleases(engine, lambda: evaluation_copywriter(settings))
    writer = loop_copywriter(settings)
    for template in ("winback_email", "promo_push"):
        assert releases.refusal(writer, template, "pre-release") == ()
        assert release_for(engine, writer.library.get(template), "gpt-stub")
    evaluated = len(openai_stub.requests)
    assert evaluated >= 5  # one request per evaluation case at least
    # The first arm's draft and its one revision promise a cure (blocked, never sent); the
    # second arm's first draft does too and its revision is clean.
    openai_stub.tamper(_with_a_cure, times=3)
    s = spec(
        f"c-{batch}",
        batch,
        content={
            "generator": "copywriter",
            "template": "winback_email",
            "market": "US",
            "brand": "demo",
            # A manager pasting a customer's address into the brief: cut out before sending.
            "brief": f"warm, like the note we got from {PLANTED_EMAIL}",
        },
    )
    spans = tmp_path / "spans.jsonl"
    with record_spans(spans):
        async with build_worker(dev_env.client, settings, task_queue=task_queue):
            handle = await start(dev_env.client, settings, s, task_queue)
            out = await drive(dev_env.client, handle, True, settings=settings)
    assert out.outcome == "completed" and out.history[0].sent > 0

    chats = [r for r in openai_stub.requests[evaluated:] if r.path.endswith("/chat/completions")]
    arms = [arm for arm, _, _ in s.arms]
    assert len(chats) == len(arms) + 2  # two revisions: one for each tampered arm
    assert all(r.body["model"] == "gpt-stub" for r in chats)
    for request in chats:
        assert PLANTED_NAME not in request.raw and "quaxworth" not in request.raw.lower()
        assert "@customers.example" not in request.raw
    assert REVISION_MARK in chats[1].raw and REVISION_MARK in chats[3].raw

    with engine.connect() as conn:
        variants = {v.arm: v for v in conn.execute(select(Variant)).all()}
        sent = conn.execute(
            select(OutboxMessage.variant_id).where(col(OutboxMessage.status) == "sent")
        ).all()
    first, second = variants[arms[0]], variants[arms[1]]
    assert first.verdict == "block" and first.generation_reasons
    assert {r["rule_id"] for r in first.generation_reasons} == {"claim.health_promise"}
    assert CURE not in second.body and second.verdict != "block"
    assert first.id not in {row.variant_id for row in sent}
    mailbox = sqlite3.connect(settings.mailbox_path)
    raws = [
        bytes(row[0]).decode("utf-8", "replace")
        for row in mailbox.execute("SELECT raw FROM messages")
    ]
    assert raws and not any("cures colds" in raw for raw in raws)

    ledger = SqlCostLedger(engine)
    costs, evaluation = ledger.costs(s.id), ledger.costs("pre-release")
    assert costs.requests == len(chats) and evaluation.requests == evaluated
    assert {line.job for line in evaluation.lines} == {"eval"}
    assert costs.input_tokens + evaluation.input_tokens == openai_stub.prompt_tokens
    assert costs.output_tokens + evaluation.output_tokens == openai_stub.completion_tokens
    expected = (openai_stub.prompt_tokens * 1000 + openai_stub.completion_tokens * 2000) / 1e6
    assert abs(costs.cost_eur + evaluation.cost_eur - expected) < 1e-6

    recorded = spans_in(spans)
    chat_spans = named(recorded, "chat gpt-stub")
    assert len(chat_spans) == len(chats)
    assert sum(sp["attributes"]["gen_ai.usage.input_tokens"] for sp in chat_spans) == (
        costs.input_tokens
    )
    assert {sp["attributes"]["gen_ai.request.model"] for sp in chat_spans} == {"gpt-stub"}
    assert {sp["attributes"]["gen_ai.operation.name"] for sp in chat_spans} == {"chat"}
    attempts = named(recorded, "content.draft_attempt")
    assert len(attempts) == len(chats)
    assert sum(sp["attributes"]["content.cost_eur"] for sp in attempts) > 0
    # Prompts and completions stay out of the trace: no copy, no personal data.
    text = json.dumps(recorded)
    assert "quaxworth" not in text.lower() and CURE not in text
