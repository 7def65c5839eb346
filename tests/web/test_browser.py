"""The web app in a real browser (Debian's chromium through Playwright), served by uvicorn,
against campaigns on Temporal's real dev server with a worker: a manager starts a campaign from
the form, its 20 %-off variant is escalated, an approver approves it from the inbox on a phone
and the cycle completes; the rules refuse the manager (role) and an approver on the campaign
they started (four-eyes); a form without its CSRF token is refused."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from approvals.requests import ApprovalView, list_approvals
from liftloop.api import create_app
from liftloop.audit import audit_log
from liftloop.campaigns import campaign_status, control_campaign, start_campaign
from liftloop.loop.spec import parse_spec
from liftloop.settings import Settings
from liftloop.temporal import build_worker
from tests.api.helpers import campaign_spec
from tests.web.browser_support import (
    chromium,
    fits_the_screen,
    phone_page,
    post_as_page,
    serving,
    sign_in,
)
from tests.web.helpers import PASSWORD, person
from tools.simulation.customers import generate_customers
from workflows.campaign_loop import CampaignStatus


async def _pending(engine: Engine, campaign_id: str, seconds: float = 45) -> ApprovalView:
    for _ in range(int(seconds / 0.2)):
        found = list_approvals(engine, "pending", campaign_id)
        if found:
            return found[0]
        await asyncio.sleep(0.2)
    raise AssertionError(f"no approval request for {campaign_id}")


async def _done(env: WorkflowEnvironment, campaign_id: str, seconds: float = 45) -> CampaignStatus:
    for _ in range(int(seconds / 0.25)):
        status = await campaign_status(env.client, campaign_id)
        if status.stage == "done":
            return status
        await asyncio.sleep(0.25)
    raise AssertionError(f"campaign {campaign_id} did not finish its cycle")


def _served(settings: Settings, env: WorkflowEnvironment) -> Settings:
    """The app connects on its own (in uvicorn's event loop) to the same dev server."""
    return settings.model_copy(
        update={"temporal_address": env.client.service_client.config.target_host}
    )


@pytest.mark.timeout(120)
async def test_a_campaign_started_and_approved_in_the_browser_completes_its_cycle(  # type: ignore[no-untyped-def]
    dev_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp, tmp_path: Path
) -> None:
    batch = f"b{uuid.uuid4().hex[:8]}"
    generate_customers(engine, 200, batch=batch)
    person(engine, "maya", "manager")
    person(engine, "lead", "approver")
    cid = f"web-{batch}"
    # One offer above the campaign's 15 % limit: its variant waits for an approver.
    spec: dict[str, Any] = campaign_spec(cid, batch, simulation={"enabled": True})
    app = create_app(_served(settings, dev_env))
    async with build_worker(dev_env.client, settings), chromium() as browser:
        with serving(app) as base:
            maya = await phone_page(browser, base)
            await sign_in(maya, "maya", PASSWORD, "/campaigns/new")
            await maya.fill('textarea[name="spec"]', json.dumps(spec, indent=2))
            async with maya.expect_navigation():
                await maya.click('button:has-text("Start the campaign")')
            assert maya.url == f"{base}/campaigns/{cid}", maya.url
            # (inner_text is the text as shown: the facts' labels are in capitals)
            assert "started by\nmaya" in (await maya.inner_text("main")).lower()

            request = await _pending(engine, cid)
            assert request.started_by == "maya" and request.rule_ids
            # The manager reads the inbox, gets no buttons, and is refused by role anyway.
            await maya.goto("/approvals")
            assert request.request_id in await maya.inner_text("main")
            assert await maya.locator('form[action$="/decide"]').count() == 0
            refused = await post_as_page(
                maya,
                f"/approvals/{request.request_id}/decide",
                {"verdict": "approve", "note": "mine"},
            )
            assert refused.status == 403
            text = await maya.inner_text("main")
            assert "approver.role" in text and "only approvers decide" in text

            lead = await phone_page(browser, base)
            await sign_in(lead, "lead", PASSWORD, "/approvals")
            card = lead.locator(f'article[id="{request.request_id}"]')
            shown = await card.inner_text()
            assert "20% off" in shown and "Unsubscribe" in shown  # subject and body
            assert await card.locator(".slot").count() >= 2  # {first_name}, {unsubscribe_url}
            for rule_id in request.rule_ids:
                assert rule_id in shown
            assert "deadline" in shown.lower() and "20 % off (limit 15 %)" in shown
            assert "people this cycle" in shown  # the audience snapshot
            await lead.screenshot(path=str(tmp_path / "inbox-phone.png"), full_page=True)
            assert await fits_the_screen(lead)

            # The same form without its hidden token: refused, nothing decided.
            await card.locator('[name="csrf_token"]').evaluate("input => input.remove()")
            await card.locator('textarea[name="note"]').fill("without a token")
            async with lead.expect_response(lambda r: r.request.method == "POST") as answer:
                await card.locator('button[value="approve"]').click()
            assert (await answer.value).status == 403
            await lead.wait_for_load_state()
            assert "security token is missing or wrong" in await lead.inner_text("main")
            assert list_approvals(engine, "pending", cid)

            await lead.goto("/approvals")
            card = lead.locator(f'article[id="{request.request_id}"]')
            await card.locator('textarea[name="note"]').fill("20 % is fine for this audience")
            async with lead.expect_navigation():
                await card.locator('button[value="approve"]').click()
            assert "decided=" in lead.url
            assert "approved by lead" in await lead.inner_text("main")

            status = await _done(dev_env, cid)
            assert status.outcome != "failed", status.reason
            [cycle] = status.history
            assert cycle.approvals_approved == 1 and cycle.sent > 0

            await maya.goto(f"/campaigns/{cid}")
            assert await maya.locator("svg circle.estimate").count() >= 1
            assert await maya.locator("svg line.zero").count() >= 1
            assert "true" in await maya.inner_text("table")  # the simulator's true lift
            await maya.screenshot(path=str(tmp_path / "campaign-phone.png"), full_page=True)
            assert await fits_the_screen(maya)

            await maya.goto("/campaigns")
            listed = maya.locator(".card", has=maya.locator(f'a[href="/campaigns/{cid}"]'))
            assert status.outcome in await listed.inner_text()
            assert await fits_the_screen(maya)

            await maya.goto(f"/campaigns/{cid}/timeline")
            timeline = await maya.inner_text("main")
            for kind in ("campaign.start", "approval.request", "approval.decide", "send.batch"):
                assert kind in timeline, kind
            await maya.screenshot(path=str(tmp_path / "timeline-phone.png"), full_page=True)
            assert await fits_the_screen(maya)


@pytest.mark.timeout(120)
async def test_the_rules_refuse_the_approver_who_started_the_campaign(  # type: ignore[no-untyped-def]
    dev_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp, tmp_path: Path
) -> None:
    batch = f"b{uuid.uuid4().hex[:8]}"
    generate_customers(engine, 50, batch=batch)
    person(engine, "otto", "approver")
    cid = f"own-{batch}"
    app = create_app(_served(settings, dev_env))
    async with build_worker(dev_env.client, settings), chromium() as browser:
        # Started for otto directly: roles are exclusive, so only this way is an approver the
        # campaign's starter.
        await start_campaign(
            dev_env.client,
            settings,
            parse_spec(campaign_spec(cid, batch)),
            audit=audit_log(settings),
            actor="otto",
        )
        request = await _pending(engine, cid)
        with serving(app) as base:
            otto = await phone_page(browser, base)
            await sign_in(otto, "otto", PASSWORD, "/approvals")
            card = otto.locator(f'article[id="{request.request_id}"]')
            shown = await card.inner_text()
            assert "You cannot decide this one" in shown and "approver.four_eyes" in shown
            assert await card.locator("form").count() == 0
            refused = await post_as_page(
                otto,
                f"/approvals/{request.request_id}/decide",
                {"verdict": "approve", "note": "looks fine to me"},
            )
            assert refused.status == 403
            text = await otto.inner_text("main")
            assert "approver.four_eyes" in text and "another approver decides" in text
            assert list_approvals(engine, "pending", cid)
        await control_campaign(dev_env.client, cid, "stop", audit=audit_log(settings), actor="test")
