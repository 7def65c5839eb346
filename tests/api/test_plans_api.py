"""The planner's API against Temporal's real dev server, over a CDP with order history: a plan
from a brief, its approval starting the campaign's workflow (no worker: the start is what is
checked), a rejection, a second decision (409), unknown plans (404), bad input (422 naming the
field) — and the CLI's `plan-decide --start`, which starts through the same path."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
import typer
from sqlalchemy.engine import Engine
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from liftloop.api import create_app
from liftloop.cli.plan import register
from liftloop.settings import Settings, get_settings
from tests.agents.planner_seed import seed_customers
from tests.api.helpers import KEY, assert_error_shape
from tools.audit import timeline

BRIEF = "Win back lapsed customers in DE via email, at most 15 % discount. Tone: calm."


@pytest_asyncio.fixture
async def http(
    dev_env: WorkflowEnvironment, settings: Settings, engine: Engine
) -> AsyncIterator[httpx.AsyncClient]:
    seed_customers(engine, 300, batch=f"b{uuid.uuid4().hex[:8]}")
    app = create_app(settings, client=dev_env.client)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client


async def _running(dev_env: WorkflowEnvironment, workflow_id: str) -> None:
    """The campaign's workflow was started (and is ended again, so the server stays clean)."""
    handle = dev_env.client.get_workflow_handle(workflow_id)
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    await handle.terminate("test over")


async def test_plan_approve_starts_the_campaign(
    http: httpx.AsyncClient, dev_env: WorkflowEnvironment, engine: Engine
) -> None:
    cid = f"plan-api-{uuid.uuid4().hex[:6]}"
    created = await http.post("/v1/plans", headers=KEY, json={"brief": BRIEF, "campaign_id": cid})
    assert created.status_code == 201, created.text
    plan = created.json()
    assert plan["status"] == "awaiting_approval" and plan["thread_id"] == f"plan-{cid}"
    assert plan["spec"]["id"] == cid and plan["spec"]["content"]["market"] == "DE"
    assert plan["tool_calls"][0]["tool"] == "segment_count"
    assert plan["evidence"]["audience"]["matched"] > 0
    assert plan["usage"]["requests"] > 0

    thread = plan["thread_id"]
    shown = await http.get(f"/v1/plans/{thread}", headers=KEY)
    assert shown.status_code == 200 and shown.json()["spec"] == plan["spec"]

    decided = await http.post(
        f"/v1/plans/{thread}/decision", headers=KEY, json={"approve": True, "comment": "go"}
    )
    assert decided.status_code == 200, decided.text
    body = decided.json()
    assert body["plan"]["status"] == "approved" and body["campaign"]["campaign_id"] == cid
    assert body["plan"]["decision"]["workflow_id"] == body["campaign"]["workflow_id"]
    await _running(dev_env, body["campaign"]["workflow_id"])

    twice = await http.post(f"/v1/plans/{thread}/decision", headers=KEY, json={"approve": False})
    assert twice.status_code == 409, twice.text
    assert_error_shape(twice)
    assert twice.json()["errors"][0] == {
        "field": "thread_id",
        "reason": f"plan '{thread}' is already approved",
    }
    again = await http.post("/v1/plans", headers=KEY, json={"brief": BRIEF, "campaign_id": cid})
    assert again.status_code == 409 and again.json()["errors"][0]["field"] == "campaign_id"

    kinds = [e.kind for e in timeline(engine, campaign_id=cid)]
    assert "campaign.start" in kinds and "plan.decide" in kinds


async def test_reject_starts_nothing(http: httpx.AsyncClient) -> None:
    created = await http.post("/v1/plans", headers=KEY, json={"brief": BRIEF})
    assert created.status_code == 201, created.text
    thread = created.json()["thread_id"]
    assert thread.startswith("plan-brief-")  # an id derived from the brief, not its words
    decided = await http.post(f"/v1/plans/{thread}/decision", headers=KEY, json={"approve": False})
    assert decided.status_code == 200, decided.text
    assert decided.json()["plan"]["status"] == "rejected" and decided.json()["campaign"] is None


@pytest.mark.parametrize(
    ("path", "status", "field"),
    [("/v1/plans/plan-nope", 404, "thread_id"), ("/v1/plans/NOT%20A%20PLAN", 404, "thread_id")],
)
async def test_unknown_plans_are_404(
    http: httpx.AsyncClient, path: str, status: int, field: str
) -> None:
    for response in (
        await http.get(path, headers=KEY),
        await http.post(f"{path}/decision", headers=KEY, json={"approve": True}),
    ):
        assert response.status_code == status, response.text
        assert_error_shape(response)
        assert response.json()["errors"][0]["field"] == field


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/plans", {"brief": "x" * 4_001}, "brief"),
        ("/v1/plans", {"brief": "line\x00break"}, "brief"),
        ("/v1/plans", {"brief": "ring \x07 the bell"}, "brief"),
        ("/v1/plans", {"brief": "   "}, "brief"),
        ("/v1/plans", {"brief": "ok", "campaign_id": "Bad Id!"}, "campaign_id"),
        ("/v1/plans", {"brief": "ok", "extra": 1}, "extra"),
        ("/v1/plans", {}, "brief"),
        ("/v1/plans/plan-x/decision", {"approve": "yes"}, "approve"),
        ("/v1/plans/plan-x/decision", {"approve": True, "comment": "x" * 2_001}, "comment"),
    ],
)
async def test_bad_input_is_422_naming_the_field(
    http: httpx.AsyncClient, path: str, body: dict[str, Any], field: str
) -> None:
    response = await http.post(path, headers=KEY, json=body)
    assert response.status_code == 422, response.text
    assert_error_shape(response)
    assert response.json()["errors"][0]["field"] == field


async def test_plans_need_the_key(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/plans", json={"brief": BRIEF})
    assert response.status_code == 401
    assert_error_shape(response)


async def test_cli_decide_start_starts_the_campaign(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed_customers(engine, 200, batch=f"b{uuid.uuid4().hex[:8]}")
    target = dev_env.client.service_client.config.target_host
    monkeypatch.setenv("LIFTLOOP_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("LIFTLOOP_TASK_QUEUE", settings.task_queue)
    monkeypatch.setenv("LIFTLOOP_TEMPORAL_ADDRESS", target)
    get_settings.cache_clear()
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    cid = f"plan-cli-{uuid.uuid4().hex[:6]}"
    try:
        # In a thread of its own: the command runs its own event loop, as from a shell.
        planned = await asyncio.to_thread(
            runner.invoke, app, ["plan", BRIEF, "--campaign-id", cid, "--json"]
        )
        assert planned.exit_code == 0, planned.output
        decide = ["plan-decide", f"plan-{cid}", "--approve", "--start", "--json"]
        decided = await asyncio.to_thread(runner.invoke, app, decide)
    finally:
        get_settings.cache_clear()
    assert decided.exit_code == 0, decided.output
    payload = json.loads(decided.stdout)
    assert payload["status"] == "approved" and payload["campaign"]["campaign_id"] == cid
    await _running(dev_env, payload["campaign"]["workflow_id"])
    starts = [e for e in timeline(engine, campaign_id=cid) if e.kind == "campaign.start"]
    assert len(starts) == 1 and starts[0].actor.startswith("cli")


async def test_a_model_the_planner_cannot_reach_is_503(
    dev_env: WorkflowEnvironment, settings: Settings
) -> None:
    unreachable = settings.model_copy(update={"llm_model": "openai:gpt-4o-mini"})
    app = create_app(unreachable, client=dev_env.client)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        response = await client.post("/v1/plans", headers=KEY, json={"brief": BRIEF})
    assert response.status_code == 503, response.text
    assert_error_shape(response)
    assert response.json()["errors"][0]["field"] == "llm_model"


async def test_concurrent_decisions_one_wins(http: httpx.AsyncClient) -> None:
    created = await http.post("/v1/plans", headers=KEY, json={"brief": BRIEF + " Race."})
    assert created.status_code == 201, created.text
    path = f"/v1/plans/{created.json()['thread_id']}/decision"
    answers = await asyncio.gather(
        *[http.post(path, headers=KEY, json={"approve": False}) for _ in range(4)]
    )
    assert sorted(a.status_code for a in answers) == [200, 409, 409, 409]
    for lost in (a for a in answers if a.status_code == 409):
        assert_error_shape(lost)
        assert lost.json()["errors"][0]["field"] == "thread_id"
