"""The approval rules over the API on the real dev server: escalation after its time lets the
escalation group decide (and is logged), the deadline refuses late decisions, and identical
variants of two campaigns are decided with one call, each checked on its own."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from liftloop.api import create_app
from liftloop.settings import Settings
from liftloop.temporal import build_worker
from tests.accounts_support import bearer, user_token
from tests.api.helpers import KEY, campaign_spec
from tools.audit import timeline
from tools.simulation.customers import generate_customers


async def _pending(http: httpx.AsyncClient, cid: str, count: int = 1) -> list[dict[str, Any]]:
    for _ in range(450):
        found = (await http.get("/v1/approvals", headers=KEY, params={"campaign_id": cid})).json()
        if len(found) >= count:
            return list(found)
        await asyncio.sleep(0.2)
    raise AssertionError(f"no approval request for {cid}")


async def test_escalation_lets_the_second_group_decide(  # type: ignore[no-untyped-def]
    dev_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp
) -> None:
    settings = settings.model_copy(
        update={"approval_escalation_s": 3.0, "approval_timeout_s": 120.0}
    )
    batch = f"b{uuid.uuid4().hex[:8]}"
    generate_customers(engine, 200, batch=batch)
    lead = bearer(user_token(engine, "lena", "approver", groups=["leads"]))
    cid = f"esc-{batch}"
    app = create_app(settings, client=dev_env.client)
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http,
        build_worker(dev_env.client, settings),
    ):
        assert (
            await http.post("/v1/campaigns", headers=KEY, json=campaign_spec(cid, batch))
        ).status_code == 201
        [request] = await _pending(http, cid)
        assert request["approver_group"] == "approvers" and request["escalation_group"] == "leads"
        assert not request["escalated"]
        decide = f"/v1/approvals/{request['request_id']}"
        early = await http.post(decide, headers=lead, json={"approved": True})
        assert early.status_code == 403 and "approver.group" in early.text, early.text

        for _ in range(150):
            [request] = await _pending(http, cid)
            if request["escalated"]:
                break
            await asyncio.sleep(0.2)
        assert request["escalated"], request
        late = await http.post(decide, headers=lead, json={"approved": True})
        assert late.status_code == 200, late.text
    kinds = [(e.kind, e.subject) for e in timeline(engine, campaign_id=cid)]
    assert ("approval.escalate", request["request_id"]) in kinds
    decided = [e for e in timeline(engine, campaign_id=cid) if e.kind == "approval.decide"]
    assert [(e.actor, e.details["path"]) for e in decided] == [("lena", "api")]


async def test_identical_variants_are_decided_in_bulk(  # type: ignore[no-untyped-def]
    dev_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp
) -> None:
    batch = f"b{uuid.uuid4().hex[:8]}"
    generate_customers(engine, 200, batch=batch)
    lead = bearer(user_token(engine, "lead", "approver"))
    ids = [f"bulk-a-{batch}", f"bulk-b-{batch}"]
    app = create_app(settings, client=dev_env.client)
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http,
        build_worker(dev_env.client, settings),
    ):
        for cid in ids:
            r = await http.post("/v1/campaigns", headers=KEY, json=campaign_spec(cid, batch))
            assert r.status_code == 201, r.text
        first, second = [(await _pending(http, cid))[0] for cid in ids]
        assert first["fingerprint"] == second["fingerprint"]
        refused = await http.post(
            f"/v1/approvals/{first['request_id']}/identical", headers=lead, json={"approved": False}
        )
        assert refused.status_code == 200 and not refused.json()["decided"]
        assert "rejection.reason" in refused.json()["refused"][first["request_id"]]
        bulk = await http.post(
            f"/v1/approvals/{first['request_id']}/identical",
            headers=lead,
            json={"approved": False, "note": "twenty percent is too much"},
        )
        assert bulk.status_code == 200, bulk.text
        decided = {o["request_id"] for o in bulk.json()["decided"]}
        assert decided == {first["request_id"], second["request_id"]}, bulk.json()
        status = (
            await http.get("/v1/approvals", headers=KEY, params={"status": "rejected"})
        ).json()
        assert {r["request_id"] for r in status} >= decided
