"""Shared pieces of the web tests: people with passwords, signing in over ASGI, a pending
approval request written as the approval stage writes one, and reading a page's tokens."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy.engine import Engine

from liftloop.audit import audit_log
from liftloop.loop.tables import ApprovalRequest, Variant
from liftloop.settings import Settings
from tests.accounts_support import user_token
from tools.audit import AuditEvent

PASSWORD = "correct horse battery staple"
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def person(engine: Engine, name: str, role: str, **kwargs: Any) -> str:
    """Add the user with `PASSWORD`; returns the name."""
    user_token(engine, name, role, password=PASSWORD, **kwargs)
    return name


def csrf_of(html: str) -> str:
    found = _TOKEN.search(html)
    assert found, "no csrf_token field on the page"
    return found.group(1)


def web_client(app: Any, *, https: bool = False) -> httpx.AsyncClient:
    """A client of the app; over https when its cookies are Secure (else they stay unsent)."""
    base = "https://web" if https else "http://web"
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base)


async def sign_in(http: httpx.AsyncClient, name: str, password: str = PASSWORD) -> str:
    """Sign in through the form; returns the session's CSRF token (from a page's forms)."""
    form = await http.get("/login")
    assert form.status_code == 200, form.text
    answer = await http.post(
        "/login",
        data={"name": name, "password": password, "csrf_token": csrf_of(form.text)},
    )
    assert answer.status_code == 303, answer.text
    page = await http.get("/approvals")
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


def pending_request(
    engine: Engine,
    settings: Settings,
    campaign_id: str,
    *,
    started_by: str = "maya",
    subject: str = "{first_name}, 20% off your next order",
    body: str = "Hi {first_name},\n\nTake 20% off this week.\n\nUnsubscribe: {unsubscribe_url}\n",
    explanation: str = "discount 20% is above the campaign's limit of 15%",
    fingerprint: str = "fp-test",
) -> str:
    """A variant waiting for approval, with its campaign's start in the audit log; the request
    id. Its workflow does not exist: the rules refuse or allow before Temporal is asked."""
    arm = "twenty_off@email"
    variant_id = f"{campaign_id}:1:{arm}"
    request_id = f"apr-{campaign_id}-1-twenty_off-email"
    now = datetime.now(UTC)
    reason = {
        "rule_id": "campaign.max_discount",
        "policy_version": "demo-1+abc123",
        "field": "offer.discount_pct",
        "severity": "escalate",
        "explanation": explanation,
    }
    with engine.begin() as conn:
        conn.execute(
            Variant.__table__.insert().values(  # type: ignore[attr-defined]
                id=variant_id,
                campaign_id=campaign_id,
                cycle=1,
                arm=arm,
                channel="email",
                template_id="offer_email",
                template_version="t1",
                subject=subject,
                body=body,
                citations=[],
                generation_reasons=[],
                verdict="escalate",
                policy_version="demo-1+abc123",
            )
        )
        conn.execute(
            ApprovalRequest.__table__.insert().values(  # type: ignore[attr-defined]
                id=request_id,
                campaign_id=campaign_id,
                workflow_id=f"campaign-{campaign_id}",
                cycle=1,
                variant_id=variant_id,
                reasons=[reason],
                status="pending",
                created_at=now,
                started_by=started_by,
                approver_group="approvers",
                deadline_at=now + timedelta(hours=1),
                fingerprint=fingerprint,
            )
        )
    audit_log(settings).append(
        AuditEvent(
            kind="campaign.start",
            actor=started_by,
            campaign_id=campaign_id,
            subject=f"campaign-{campaign_id}",
            details={
                "spec": {
                    "id": campaign_id,
                    "offers": [{"id": "twenty_off", "discount_pct": 20, "margin_pct": 40}],
                    "limits": {"max_discount_pct": 15},
                }
            },
        )
    )
    return request_id
