"""The campaign and approval API against Temporal's real dev server and a worker: concurrent
decisions (exactly one wins), failed campaigns shown failed with their reason, and a stop that
works on a campaign whose workflow task keeps failing."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from approvals.requests import CLAIM_TTL, ApprovalConflict, _claim, _release
from liftloop.api import create_app
from liftloop.campaigns import loop_input
from liftloop.loop.spec import parse_spec
from liftloop.loop.tables import ApprovalRequest
from liftloop.settings import Settings
from liftloop.temporal import build_worker
from tests.accounts_support import bearer, user_token
from tests.api.helpers import KEY, assert_error_shape, campaign_spec
from tools.simulation.customers import generate_customers


def _http(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


async def _until(probe: Any, what: str, seconds: float = 90.0) -> Any:
    """Poll `probe()` (async) until it returns something truthy."""
    for _ in range(int(seconds / 0.2)):
        found = await probe()
        if found:
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def test_four_concurrent_decisions_one_wins_the_others_get_409(  # type: ignore[no-untyped-def]
    dev_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp
) -> None:
    batch = f"b{uuid.uuid4().hex[:8]}"
    generate_customers(engine, 200, batch=batch)
    app = create_app(settings, client=dev_env.client)
    cid = f"conc-{batch}"
    async with _http(app) as http, build_worker(dev_env.client, settings):
        started = await http.post("/v1/campaigns", headers=KEY, json=campaign_spec(cid, batch))
        assert started.status_code == 201, started.text

        async def pending() -> list[dict[str, Any]]:
            r = await http.get("/v1/approvals", headers=KEY, params={"campaign_id": cid})
            return list(r.json())

        rid = (await _until(pending, "the approval request"))[0]["request_id"]
        leads = [bearer(user_token(engine, f"lead{i}", "approver")) for i in range(5)]
        answers = await asyncio.gather(
            *[
                http.post(
                    f"/v1/approvals/{rid}",
                    headers=leads[i],
                    json={"approved": i % 2 == 0, "note": f"seen by lead{i}"},
                )
                for i in range(4)
            ]
        )
        codes = sorted(a.status_code for a in answers)
        assert codes == [200, 409, 409, 409], [a.text for a in answers]
        winner = next(a.json() for a in answers if a.status_code == 200)
        for lost in (a for a in answers if a.status_code == 409):
            assert_error_shape(lost)
            assert lost.json()["errors"][0]["field"] == "request_id"
        with engine.connect() as conn:
            row = conn.execute(
                select(ApprovalRequest.status, ApprovalRequest.decided_by).where(
                    ApprovalRequest.id == rid
                )
            ).one()
        assert row.decided_by == winner["decided_by"]
        assert row.status == ("approved" if winner["approved"] else "rejected")

        # When the workflow itself refuses (the database says pending, the campaign does not):
        # 409, not 500, and the claim is released.
        with engine.begin() as conn:
            conn.execute(
                update(ApprovalRequest)
                .where(ApprovalRequest.id == rid)
                .values(status="pending", decided_by=None, decided_at=None)
            )
        again = await http.post(f"/v1/approvals/{rid}", headers=leads[4], json={"approved": True})
        assert again.status_code == 409, again.text
        assert_error_shape(again)
        reason = again.json()["errors"][0]["reason"]
        assert "not pending" in reason or "ended" in reason or "already" in reason, reason

        async def done() -> dict[str, Any] | None:
            st = (await http.get(f"/v1/campaigns/{cid}", headers=KEY)).json()
            return st if st["stage"] == "done" else None

        final = await _until(done, "the campaign to end")
        assert final["outcome"] != "failed", final


@pytest.mark.parametrize(
    ("content", "words"),
    [
        pytest.param({"market": "FR", "brand": "default"}, "FR", id="unknown-market"),
        pytest.param(
            {"market": "US", "brand": "demo", "template": "no_such_template"},
            "no_such_template",
            id="unknown-template",
        ),
    ],
)
async def test_a_failed_campaign_shows_failed_with_its_reason(  # type: ignore[no-untyped-def]
    dev_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp,
    content: dict[str, str],
    words: str,
) -> None:
    batch = f"b{uuid.uuid4().hex[:8]}"
    generate_customers(engine, 50, batch=batch)
    app = create_app(settings, client=dev_env.client)
    cid = f"fail-{batch}"
    async with _http(app) as http, build_worker(dev_env.client, settings):
        spec = campaign_spec(cid, batch, content=content)
        started = await http.post("/v1/campaigns", headers=KEY, json=spec)
        assert started.status_code == 201, started.text

        async def ended() -> dict[str, Any] | None:
            st = (await http.get(f"/v1/campaigns/{cid}", headers=KEY)).json()
            return st if st["outcome"] != "running" else None

        status = await _until(ended, "the campaign to fail")
        assert status["outcome"] == "failed" and status["stage"] == "done", status
        assert words in status["reason"] and "stage" in status["reason"], status

        listed = (await http.get("/v1/campaigns", headers=KEY)).json()
        mine = [c for c in listed if c["campaign_id"] == cid]
        assert mine and mine[0]["outcome"] == "failed" and words in mine[0]["reason"], listed

        stop = await http.post(f"/v1/campaigns/{cid}/stop", headers=KEY)
        assert stop.status_code == 409, stop.text
        assert_error_shape(stop)
        assert "already ended (failed)" in stop.json()["errors"][0]["reason"]
    # Temporal's own record says failed, with the reason.
    desc = await dev_env.client.get_workflow_handle(f"campaign-{cid}").describe()
    assert desc.status is not None and desc.status.name == "FAILED"


async def test_stop_works_on_a_campaign_whose_workflow_task_keeps_failing(  # type: ignore[no-untyped-def]
    dev_env: WorkflowEnvironment, settings: Settings, engine: Engine
) -> None:
    """What an API that stored NaN as null used to start: an input the worker cannot decode.
    The validation makes it impossible through the API; this one is started around it."""
    cid = f"stuck-{uuid.uuid4().hex[:8]}"
    raw = loop_input(parse_spec(campaign_spec(cid)), settings).model_dump(mode="json")
    raw["spec"]["cadence"]["every"] = None  # what Infinity became on the way to Temporal
    app = create_app(settings, client=dev_env.client)
    async with _http(app) as http, build_worker(dev_env.client, settings):
        await dev_env.client.start_workflow(
            "CampaignLoopWorkflow", raw, id=f"campaign-{cid}", task_queue=settings.task_queue
        )

        async def stuck() -> dict[str, Any] | None:
            st = (await http.get(f"/v1/campaigns/{cid}", headers=KEY)).json()
            return st if "workflow task is failing" in (st.get("reason") or "") else None

        status = await _until(stuck, "the failing workflow task to show", seconds=60)
        assert status["outcome"] == "running" and "decoding" in status["reason"], status

        stop = await http.post(f"/v1/campaigns/{cid}/stop", headers=KEY)
        assert stop.status_code == 202, stop.text
        assert stop.json()["effect"] == "terminated", stop.json()

        after = (await http.get(f"/v1/campaigns/{cid}", headers=KEY)).json()
        assert after["outcome"] == "stopped" and after["stage"] == "done", after
        assert after["reason"].startswith("terminated: stop requested while"), after
        again = await http.post(f"/v1/campaigns/{cid}/stop", headers=KEY)
        assert again.status_code == 409  # it has ended


async def test_stop_of_a_healthy_campaign_is_a_signal(  # type: ignore[no-untyped-def]
    dev_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp
) -> None:
    batch = f"b{uuid.uuid4().hex[:8]}"
    generate_customers(engine, 50, batch=batch)
    app = create_app(settings, client=dev_env.client)
    cid = f"calm-{batch}"
    async with _http(app) as http, build_worker(dev_env.client, settings):
        spec = campaign_spec(cid, batch, cadence={"every": "1h", "max_cycles": 3})
        assert (await http.post("/v1/campaigns", headers=KEY, json=spec)).status_code == 201
        stop = await http.post(f"/v1/campaigns/{cid}/stop", headers=KEY)
        assert stop.status_code == 202 and stop.json()["effect"] in ("signalled", "stopped")

        async def done() -> dict[str, Any] | None:
            st = (await http.get(f"/v1/campaigns/{cid}", headers=KEY)).json()
            return st if st["stage"] == "done" else None

        final = await _until(done, "the campaign to stop")
        assert final["outcome"] == "stopped" and final["reason"] is None, final
        audit = await http.get("/v1/audit", params={"campaign_id": cid}, headers=KEY)
        started, stopped = audit.json()[:2]
        assert (started["kind"], started["actor"]) == ("campaign.start", "service")
        assert started["details"]["spec"]["cadence"]["max_cycles"] == 3
        assert (stopped["kind"], stopped["details"]["effect"]) == (
            "campaign.stop",
            stop.json()["effect"],
        )
    unknown = create_app(settings, client=dev_env.client)
    async with _http(unknown) as http:
        r = await http.post("/v1/campaigns/never-started/stop", headers=KEY)
        assert r.status_code == 404 and r.json()["errors"][0]["field"] == "campaign_id"


def test_the_claim_is_atomic_across_threads(engine: Engine) -> None:
    rid = f"apr-{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(
            ApprovalRequest.__table__.insert().values(  # type: ignore[attr-defined]
                id=rid,
                campaign_id="c",
                workflow_id="campaign-c",
                cycle=1,
                variant_id="v",
                reasons=[],
                status="pending",
                created_at=datetime.now(UTC),
            )
        )
    barrier = threading.Barrier(8)
    won: list[datetime] = []
    lost: list[str] = []

    def decide(i: int) -> None:
        barrier.wait()
        try:
            won.append(_claim(engine, rid, f"t{i}"))
        except ApprovalConflict as exc:
            lost.append(exc.reason)

    threads = [threading.Thread(target=decide, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 7, (won, lost)
    assert all("being decided" in r for r in lost)
    # A claim left by a caller that died is taken over once it is stale; a release undoes only
    # the claim it was given.
    with engine.begin() as conn:
        conn.execute(
            update(ApprovalRequest)
            .where(ApprovalRequest.id == rid)
            .values(decided_at=datetime.now(UTC) - CLAIM_TTL - timedelta(seconds=1))
        )
    fresh = _claim(engine, rid, "rescuer")
    _release(engine, rid, won[0])  # the dead caller's claim: nothing happens
    with engine.connect() as conn:
        assert (
            conn.execute(select(ApprovalRequest.status).where(ApprovalRequest.id == rid)).scalar()
            == "deciding"
        )
    _release(engine, rid, fresh)
    with engine.connect() as conn:
        assert (
            conn.execute(select(ApprovalRequest.status).where(ApprovalRequest.id == rid)).scalar()
            == "pending"
        )
