"""Slack approvals end to end: a real campaign on Temporal's dev server with a worker whose
notifier posts to the Slack stand-in; signed clicks on the posted buttons decide its requests
through `POST /slack/interactivity`, and the workflow resumes."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from approvals.requests import get_approval
from approvals.slack_notify import posted_message
from approvals.slack_tables import SlackEscalation, SlackMessage
from liftloop.api import create_app
from liftloop.settings import Settings
from liftloop.temporal import build_worker
from tests.accounts_support import bearer, user_token
from tests.api.helpers import KEY, campaign_spec
from tests.slack.slack_stub import SlackStub, block_action, channel_id, view_submission
from tests.slack.support import http_for, post_signed
from tools.simulation.customers import generate_customers


async def _until(probe: Any, what: str, seconds: float = 90.0) -> Any:
    for _ in range(int(seconds / 0.2)):
        found = await probe()
        if found:
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _button(call_body: dict[str, Any], action: str) -> str:
    [actions] = [b for b in call_body["blocks"] if b["type"] == "actions"]
    [button] = [e for e in actions["elements"] if e["action_id"] == action]
    return str(button["value"])


async def test_slack_buttons_decide_a_campaigns_requests_and_it_resumes(  # type: ignore[no-untyped-def]
    dev_env: WorkflowEnvironment, slack_settings: Settings, engine: Engine, smtp, slack: SlackStub
) -> None:
    settings = slack_settings.model_copy(update={"approval_escalation_s": 2.0})
    batch = f"b{uuid.uuid4().hex[:8]}"
    generate_customers(engine, 200, batch=batch)
    maya = bearer(user_token(engine, "maya", "manager", slack_id="U0MAYA"))
    user_token(engine, "lead", "approver", slack_id="U0LEAD")
    cid = f"slack-{batch}"
    spec = campaign_spec(
        cid,
        batch,
        offers=[{"id": "twenty_off", "discount_pct": 20}, {"id": "thirty_off", "discount_pct": 30}],
    )
    app = create_app(settings, client=dev_env.client)
    async with http_for(app) as http, build_worker(dev_env.client, settings):
        started = await http.post("/v1/campaigns", headers=maya, json=spec)
        assert started.status_code == 201, started.text

        # The worker's notifier posts each request once, with its buttons.
        posts = await asyncio.to_thread(slack.wait_for, "chat.postMessage", 2)
        first = [p for p in posts if p.body["channel"] == "#approvals"]
        request_ids = sorted(_button(p.body, "approve") for p in first)
        assert len(request_ids) == 2 and all(_button(p.body, "reject") for p in first)
        pending = (await http.get("/v1/approvals", headers=KEY, params={"campaign_id": cid})).json()
        assert sorted(r["request_id"] for r in pending) == request_ids
        # Two seconds on, both are escalated: posted to the escalation channel, once each.
        escalated = await asyncio.to_thread(slack.wait_for, "chat.postMessage", 4)
        assert (
            sorted(p.body["channel"] for p in escalated)
            == ["#approvals"] * 2 + ["#approvals-leads"] * 2
        )
        approve_id, reject_id = request_ids
        where = posted_message(engine, SlackMessage, approve_id)
        assert where is not None and where[0] == channel_id("#approvals")

        # Who may not decide is told so; nothing is decided.
        for user, words in (("U0NOBODY", "not a liftloop user"), ("U0MAYA", "approver.role")):
            url = slack.response_url(f"refused-{user}")
            answer = await post_signed(
                http, block_action(user, "approve", approve_id, response_url=url)
            )
            assert answer.status_code == 200
            [reply] = slack.calls(f"hook:refused-{user}")
            assert words in reply.body["text"] and reply.body["response_type"] == "ephemeral"
        assert get_approval(engine, approve_id).status == "pending"

        # An approver's click approves: the request, its audit entry, its messages.
        url = slack.response_url("approve")
        click = block_action(
            "U0LEAD", "approve", approve_id, response_url=url, channel=where[0], message_ts=where[1]
        )
        assert (await post_signed(http, click)).status_code == 200
        decided = get_approval(engine, approve_id)
        assert (decided.status, decided.decided_by) == ("approved", "lead")
        [replaced] = slack.calls("hook:approve")
        assert replaced.body["replace_original"] is True
        assert "Approved by lead" in json.dumps(replaced.body["blocks"])
        assert all(b["type"] != "actions" for b in replaced.body["blocks"])
        # The notifier updates both of the request's messages (the post and the escalation).
        targets = {posted_message(engine, t, approve_id) for t in (SlackMessage, SlackEscalation)}

        async def updated() -> bool:
            return targets == {
                (c.body["channel"], c.body["ts"])
                for c in slack.calls("chat.update")
                if "Approved by lead" in json.dumps(c.body["blocks"])
            }

        await _until(updated, "the decided updates")
        audit = (await http.get("/v1/audit", headers=KEY, params={"campaign_id": cid})).json()
        [entry] = [e for e in audit if e["kind"] == "approval.decide"]
        assert entry["details"]["path"] == "slack" and entry["actor"] == "lead"

        # Reject asks why in a modal; its submission rejects with that reason.
        url = slack.response_url("reject")
        click = block_action("U0LEAD", "reject", reject_id, response_url=url, trigger_id="t-1")
        assert (await post_signed(http, click)).status_code == 200
        assert get_approval(engine, reject_id).status == "pending"
        [opened] = slack.calls("views.open")
        submitted = await post_signed(
            http, view_submission("U0LEAD", opened.body["view"], "thirty percent is too much")
        )
        assert submitted.status_code == 200 and submitted.content == b""
        rejected = get_approval(engine, reject_id)
        assert (rejected.status, rejected.note) == ("rejected", "thirty percent is too much")
        assert "Rejected by lead" in json.dumps(slack.calls("hook:reject")[0].body["blocks"])

        # Both are answered: the workflow leaves the approval stage and runs its cycle out.
        async def resumed() -> dict[str, Any] | None:
            st = (await http.get(f"/v1/campaigns/{cid}", headers=KEY)).json()
            return st if st["stage"] == "done" else None

        final = await _until(resumed, "the campaign to go on")
        assert final["history"][0]["approvals_requested"] == 2, final
        assert final["history"][0]["approvals_approved"] == 1, final
        assert final["history"][0]["sent"] > 0, final
        # However the activities ran, each request was posted once and escalated once.
        assert len(slack.calls("chat.postMessage")) == 4
