"""The HTTP API against the real dev server: keys, spec errors, start, status, control,
approvals, and the rules of a decision as the API enforces them (403 naming the rule)."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from liftloop.api import create_app
from liftloop.credentials import api_keys
from liftloop.temporal import build_worker
from tests.accounts_support import bearer, user_token
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

        maya = bearer(user_token(engine, "maya", "manager"))
        lead = bearer(user_token(engine, "lead", "approver"))
        ana = bearer(user_token(engine, "ana", "auditor"))
        other_group = bearer(user_token(engine, "olaf", "approver", groups=["leads"]))
        refused = await http.post("/v1/campaigns", headers=ana, json=_spec("api-no", batch))
        assert refused.status_code == 403 and "manager" in refused.text, refused.text

        cid = f"api-{batch}"
        started = await http.post("/v1/campaigns", headers=maya, json=_spec(cid, batch))
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

        assert pending[0]["started_by"] == "maya" and pending[0]["deadline_at"]
        unknown = await http.post("/v1/approvals/nope", headers=lead, json={"approved": True})
        assert unknown.status_code == 404
        decide = f"/v1/approvals/{pending[0]['request_id']}"
        for who, body, rule in (
            (key, {"approved": True}, "personal token"),
            (maya, {"approved": True}, "approver.role"),
            (ana, {"approved": True}, "approver.role"),
            (other_group, {"approved": True}, "approver.group"),
            (lead, {"approved": False}, "rejection.reason"),
        ):
            r = await http.post(decide, headers=who, json=body)
            assert r.status_code == 403 and rule in r.json()["errors"][0]["reason"], r.text
        decided = await http.post(decide, headers=lead, json={"approved": True, "note": "ok"})
        assert decided.status_code == 200 and decided.json()["approved"] is True
        assert decided.json()["decided_by"] == "lead"

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
        assert decided_list[0]["decided_by"] == "lead"
        assert "/v1/campaigns" in (await http.get("/openapi.json")).json()["paths"]
