"""The HTTP API against the real dev server: keys, spec errors, start, status, control,
approvals."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from liftloop.api import create_app
from liftloop.credentials import api_keys
from liftloop.temporal import build_worker
from tools.simulation.customers import generate_customers


def _spec(campaign_id: str, batch: str) -> dict[str, object]:
    return {
        "id": campaign_id,
        "channels": ["email"],
        "audience": {"segment": {"all": [{"trait": "source_batch", "eq": batch}]}},
        "offers": [{"id": "twenty_off", "discount_pct": 20}],
        "limits": {"max_discount_pct": 15},
        "content": {"market": "US", "brand": "demo"},
        "cadence": {"every": "0s", "max_cycles": 1},
        "stop": {"ship_when": "never", "min_cycles": 1},
    }


async def test_api_runs_a_campaign_through_its_approval(
    dev_env,
    settings,
    engine,
    smtp,  # type: ignore[no-untyped-def]
    task_queue,
):
    settings = settings.model_copy(update={"task_queue": task_queue})
    app = create_app(settings, client=dev_env.client)
    # No key is set: the app generated one in the data directory, as on first `liftloop up`.
    key = {"X-API-Key": api_keys(settings)[0]}
    batch = f"b{uuid.uuid4().hex[:8]}"
    generate_customers(engine, 300, batch=batch)
    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://api") as http,
        build_worker(dev_env.client, settings, task_queue=task_queue),
    ):
        assert (await http.get("/v1/approvals")).status_code == 401
        assert (await http.get("/v1/approvals", headers={"X-API-Key": "wrong"})).status_code == 401

        bad = await http.post(
            "/v1/campaigns", headers=key, json={"id": "Bad Id", "channels": [], "offers": []}
        )
        assert bad.status_code == 422
        fields = {d["field"] for d in bad.json()["errors"]}
        assert {"id", "channels", "offers"} <= fields

        cid = f"api-{batch}"
        started = await http.post("/v1/campaigns", headers=key, json=_spec(cid, batch))
        assert started.status_code == 201, started.text
        again = await http.post("/v1/campaigns", headers=key, json=_spec(cid, batch))
        assert again.status_code == 409

        pending: list[dict[str, object]] = []
        for _ in range(150):
            pending = (
                await http.get("/v1/approvals", headers=key, params={"campaign_id": cid})
            ).json()
            if pending:
                break
            await asyncio.sleep(0.2)
        status = (await http.get(f"/v1/campaigns/{cid}", headers=key)).json()
        assert len(pending) == 1 and "above" in str(pending[0]["reasons"]), status
        status = (await http.get(f"/v1/campaigns/{cid}", headers=key)).json()
        assert status["stage"] == "approval" and len(status["pending_approvals"]) == 1

        unknown = await http.post(
            "/v1/approvals/nope", headers=key, json={"approved": True, "approver": "t"}
        )
        assert unknown.status_code == 404
        decided = await http.post(
            f"/v1/approvals/{pending[0]['request_id']}",
            headers=key,
            json={"approved": True, "approver": "lead@shop"},
        )
        assert decided.status_code == 200 and decided.json()["approved"] is True

        for _ in range(300):
            status = (await http.get(f"/v1/campaigns/{cid}", headers=key)).json()
            if status["stage"] == "done":
                break
            await asyncio.sleep(0.2)
        # Nobody bought anything (no simulator here), so the campaign's contribution margin is
        # just the cost of its sends: the stop rule ends it as harmful.
        assert status["outcome"] == "stopped_harmful"
        assert status["history"][0]["sent"] > 0 and status["history"][0]["approvals_approved"] == 1
        decided_list = (
            await http.get(
                "/v1/approvals", headers=key, params={"status": "approved", "campaign_id": cid}
            )
        ).json()
        assert decided_list[0]["decided_by"] == "lead@shop"
        assert "/v1/campaigns" in (await http.get("/openapi.json")).json()["paths"]
