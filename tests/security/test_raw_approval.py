"""Finding: anyone who could reach Temporal's port (7233) could send the campaign's workflow a
`decide_approval` update with any approver and no key, and so approve anything.

Now a decision counts only with a proof signed by liftloop's approval path
(`approvals.requests.decide_approval`, behind the API and the CLI) and checked by the worker.
Each attack below is sent from a plain Temporal client, as an attacker on the port would; each
is refused, the request stays pending and its variant unapproved. The API path still approves.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.engine import Engine
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from liftloop.api import create_app
from liftloop.credentials import api_keys, approval_signing_key
from liftloop.loop.approvals import sign_decision
from liftloop.loop.payloads import ApprovalDecision
from liftloop.loop.tables import ApprovalRequest, Variant
from liftloop.settings import Settings
from liftloop.temporal import build_worker
from tests.accounts_support import bearer, user_token
from tests.loop.helpers import spec, start
from tools.simulation.customers import generate_customers
from workflows.campaign_loop import CampaignLoopWorkflow, CampaignStatus

OLD_PUBLIC_KEY = b"liftloop-dev-signing-key"


async def _wait(handle: Any, check: Any, what: str) -> CampaignStatus:
    for _ in range(300):
        try:
            st: CampaignStatus = await handle.query(CampaignLoopWorkflow.status)
        except Exception:
            st = None  # type: ignore[assignment]
        if st is not None and check(st):
            return st
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _requests(engine: Engine, campaign_id: str) -> dict[str, tuple[str, str | None, str]]:
    """request id -> (status, decided_by, variant id)"""
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                ApprovalRequest.id,
                ApprovalRequest.status,
                ApprovalRequest.decided_by,
                ApprovalRequest.variant_id,
            ).where(ApprovalRequest.campaign_id == campaign_id)
        ).all()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def _variants_approved(engine: Engine, ids: list[str]) -> dict[str, bool | None]:
    with engine.connect() as conn:
        rows = conn.execute(select(Variant.id, Variant.approved).where(Variant.id.in_(ids)))  # type: ignore[attr-defined]
        return {r[0]: r[1] for r in rows}


async def _decisions_in_history(handle: Any) -> list[ApprovalDecision]:
    """The decisions the workflow took (updates that completed without failure), read back
    from its history as anyone with access to Temporal can: what an attacker could replay."""
    history = await handle.fetch_history()
    sent: dict[str, ApprovalDecision] = {}
    took: list[ApprovalDecision] = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            request = event.workflow_execution_update_accepted_event_attributes.accepted_request
            if request.input.name == "decide_approval":
                (decision,) = pydantic_data_converter.payload_converter.from_payloads(
                    list(request.input.args.payloads), [ApprovalDecision]
                )
                sent[request.meta.update_id] = decision
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED:
            done = event.workflow_execution_update_completed_event_attributes
            if done.meta.update_id in sent and done.outcome.HasField("success"):
                took.append(sent[done.meta.update_id])
    return took


async def test_an_update_sent_straight_to_temporal_cannot_approve(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: Any,
    task_queue: str,
) -> None:
    batch = f"b{uuid.uuid4().hex[:8]}"
    generate_customers(engine, 300, batch=batch)
    s = spec(f"sec-{batch}", batch)  # twenty_off on email and push: two escalations
    key = approval_signing_key(settings)  # the installation's key, generated in the data dir
    async with build_worker(dev_env.client, settings, task_queue=task_queue):
        own = await start(dev_env.client, settings, s, task_queue)
        st = await _wait(own, lambda st: len(st.pending_approvals) == 2, "two pending approvals")
        target, other = sorted(p.request_id for p in st.pending_approvals)

        # The attacker: a plain client on the port, no liftloop code, no keys.
        attacker = await Client.connect(
            dev_env.client.service_client.config.target_host,
            data_converter=pydantic_data_converter,
        )
        handle = attacker.get_workflow_handle(own.id)
        attacks: dict[str, tuple[ApprovalDecision, str]] = {
            "no proof": (
                ApprovalDecision(request_id=target, approved=True, approver="attacker"),
                "needs liftloop's proof",
            ),
            "signed with the old public key": (
                sign_decision(OLD_PUBLIC_KEY, target, True, "attacker"),
                "does not verify",
            ),
            "signed with a key of its own": (
                sign_decision(b"attacker-key-" + uuid.uuid4().bytes, target, True, "attacker"),
                "does not verify",
            ),
            "a rejection flipped to approval": (
                sign_decision(key, target, False, "lead@shop").model_copy(
                    update={"approved": True}
                ),
                "does not verify",
            ),
            "approver changed": (
                sign_decision(key, target, True, "lead@shop").model_copy(
                    update={"approver": "ceo@shop"}
                ),
                "does not verify",
            ),
            "signed for another request": (
                sign_decision(key, other, True, "lead@shop").model_copy(
                    update={"request_id": target}
                ),
                "does not verify",
            ),
            "expired": (
                sign_decision(key, target, True, "lead@shop", now=time.time() - 3600),
                "expired",
            ),
        }
        for name, (decision, reason) in attacks.items():
            with pytest.raises(WorkflowUpdateFailedError) as info:
                await handle.execute_update(CampaignLoopWorkflow.decide_approval, decision)
            message = str(getattr(info.value.cause, "message", info.value.cause))
            assert reason in message, (name, message)

        # No harm: both requests still pending, in the workflow and in the inbox.
        st = await handle.query(CampaignLoopWorkflow.status)
        assert sorted(p.request_id for p in st.pending_approvals) == [target, other]
        requests = _requests(engine, s.id)
        assert {rid: r[0] for rid, r in requests.items()} == {target: "pending", other: "pending"}
        variants = [requests[target][2], requests[other][2]]
        assert not any(_variants_approved(engine, variants).values())

        # A signer with another key than the worker's (a misconfiguration) is refused too,
        # named, and leaves the request pending.
        lead = bearer(user_token(engine, "lead", "approver"))
        wrong = settings.model_copy(update={"approval_signing_key": SecretStr("another-key" * 3)})
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(wrong, client=dev_env.client)),
            base_url="http://api",
        ) as http:
            r = await http.post(
                f"/v1/approvals/{target}",
                headers=lead,
                json={"approved": True},
            )
        assert r.status_code == 503 and r.json()["errors"][0]["field"] == "approval_signing_key"
        assert _requests(engine, s.id)[target][0] == "pending"

        # liftloop's API path still approves (its key: the one generated in the data dir).
        app = create_app(settings, client=dev_env.client)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api"
        ) as http:
            r = await http.post(
                f"/v1/approvals/{target}",
                headers=lead,
                json={"approved": True},
            )
            assert r.status_code == 200, r.text
            assert r.json()["approved"] is True

            # Replays: the accepted decision, read from the history, sent again for its own
            # request (decided already) and for the other one (the proof binds the id).
            (accepted,) = await _decisions_in_history(handle)
            assert accepted.proof is not None and accepted.request_id == target
            for replay in (accepted, accepted.model_copy(update={"request_id": other})):
                with pytest.raises(WorkflowUpdateFailedError):
                    await handle.execute_update(CampaignLoopWorkflow.decide_approval, replay)
            st = await handle.query(CampaignLoopWorkflow.status)
            assert [p.request_id for p in st.pending_approvals] == [other]

            r = await http.post(
                f"/v1/approvals/{other}",
                headers=lead,
                json={"approved": False, "note": "too generous"},
            )
            assert r.status_code == 200, r.text
        out = await own.result()

    assert out.history[0].approvals_requested == 2
    assert out.history[0].approvals_approved == 1
    requests = _requests(engine, s.id)
    assert requests[target][:2] == ("approved", "lead")
    assert requests[other][:2] == ("rejected", "lead")
    assert _variants_approved(engine, [requests[target][2], requests[other][2]]) == {
        requests[target][2]: True,
        requests[other][2]: False,
    }
    # Only MACs travel: neither the approval key nor the API key is in the history.
    history = await own.fetch_history()
    assert key.decode() not in history.to_json() and api_keys(settings)[0] not in history.to_json()
    # The new path (verification activities, refused updates) replays deterministically.
    replayed = await Replayer(
        workflows=[CampaignLoopWorkflow], data_converter=pydantic_data_converter
    ).replay_workflow(history)
    assert replayed.replay_failure is None
