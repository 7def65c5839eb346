"""Redress through the API and the CLI: a person is shown why they got a message, and their
objection is honoured at once, reviewed in the approvals inbox and logged."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session
from typer.testing import CliRunner

from liftloop.api import create_app
from liftloop.cli import app as cli_app
from liftloop.db import make_engine
from liftloop.loop.tables import DecisionRecord, OutboxMessage, Variant
from liftloop.settings import Settings, get_settings
from tests.accounts_support import bearer, user_token
from tests.api.helpers import API_KEY, KEY, assert_error_shape
from tools.audit import timeline
from tools.cdp.consent import CHANNELS, has_consent
from tools.cdp.tables import Consent, Identity, Profile

NOW = datetime.now(UTC)
EMAIL = "ada@customers.example"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("LIFTLOOP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("LIFTLOOP_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    yield Settings(data_dir=tmp_path / "data", api_keys=[SecretStr(API_KEY)])
    get_settings.cache_clear()


@pytest.fixture
def engine(settings: Settings) -> Engine:
    engine = make_engine(settings.cdp_url)
    with Session(engine) as s:
        for pid, email in (("p-ada", EMAIL), ("p-bob", "bob@customers.example")):
            s.add(Profile(id=pid, email=email, created_at=NOW))
            s.add(Identity(profile_id=pid, kind="email", value=email, first_seen=NOW))
            s.add(
                Consent(
                    profile_id=pid,
                    channel="email",
                    purpose="marketing",
                    granted=True,
                    recorded_at=NOW,
                )
            )
            s.add(
                DecisionRecord(
                    campaign_id="spring",
                    cycle=1,
                    profile_id=pid,
                    shard=0,
                    segment="mens",
                    holdout=False,
                    arm="ten_off@email",
                    offer_id="ten_off",
                    channel="email",
                    propensity=0.25,
                    policy="thompson",
                    decided_at=NOW,
                )
            )
            s.add(
                OutboxMessage(
                    id=f"m-{pid}",
                    campaign_id="spring",
                    cycle=1,
                    profile_id=pid,
                    channel="email",
                    shard=0,
                    variant_id="spring:1:ten_off@email",
                    recipient=email,
                    status="sent",
                    created_at=NOW,
                    sent_at=NOW,
                )
            )
        s.add(
            Variant(
                id="spring:1:ten_off@email",
                campaign_id="spring",
                cycle=1,
                arm="ten_off@email",
                channel="email",
                template_id="promo_email",
                template_version="3",
                subject="s",
                body="b",
                verdict="allow",
                policy_version="1.0+abc",
                approved=True,
            )
        )
        s.commit()
    return engine


def _http(settings: Settings) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(settings))
    return httpx.AsyncClient(transport=transport, base_url="http://api")


def _marketing(engine: Engine, pid: str) -> bool:
    with engine.connect() as conn:
        q = select(Profile.id).where(has_consent("marketing", "email"), Profile.id == pid)  # type: ignore[arg-type]
        return conn.execute(q).first() is not None


@pytest.mark.asyncio
async def test_why_then_objection_honoured_reviewed_and_logged(
    settings: Settings, engine: Engine
) -> None:
    async with _http(settings) as http:
        why = await http.get(f"/v1/people/{EMAIL}/messages", headers=KEY)
        assert why.status_code == 200, why.text
        [msg] = why.json()["messages"]
        assert why.json()["profile_id"] == "p-ada" and msg["message_id"] == "m-p-ada"
        assert msg["decision"]["propensity"] == 0.25 and msg["decision"]["policy"] == "thompson"
        assert msg["variant"]["policy_version"] == "1.0+abc"

        assert _marketing(engine, "p-ada")
        filed = await http.post(
            f"/v1/people/{EMAIL}/objections",
            headers=KEY,
            json={"reason": "I never asked for discounts", "message_id": "m-p-ada"},
        )
        assert filed.status_code == 201, filed.text
        request_id = filed.json()["request_id"]
        assert filed.json()["withdrawn"] == len(CHANNELS)
        assert not _marketing(engine, "p-ada") and _marketing(engine, "p-bob")

        inbox = (await http.get("/v1/approvals", headers=KEY)).json()
        [task] = [r for r in inbox if r["request_id"] == request_id]
        assert task["kind"] == "objection" and task["campaign_id"] == "spring"
        assert "I never asked for discounts" in task["reasons"][0]

        dpo = bearer(user_token(engine, "dpo", "approver"))
        reviewed = await http.post(
            f"/v1/approvals/{request_id}",
            headers=dpo,
            json={"approved": True, "note": "upheld"},
        )
        assert reviewed.status_code == 200, reviewed.text
        again = await http.post(
            f"/v1/approvals/{request_id}",
            headers=dpo,
            json={"approved": False, "note": "changed my mind"},
        )
        assert again.status_code == 409
        assert not _marketing(engine, "p-ada")  # the review cannot undo the withdrawal

    kinds = [(e.kind, e.actor, e.subject) for e in timeline(engine)]
    assert ("privacy.objection", "service", "p-ada") in kinds
    assert ("privacy.objection_reviewed", "dpo", request_id) in kinds
    assert EMAIL not in json.dumps([e.model_dump(mode="json") for e in timeline(engine)])


@pytest.mark.asyncio
async def test_bad_objections_are_refused_with_their_field(
    settings: Settings, engine: Engine
) -> None:
    async with _http(settings) as http:
        unknown = await http.get("/v1/people/nobody@example.com/messages", headers=KEY)
        assert unknown.status_code == 404
        assert_error_shape(unknown)
        empty = await http.post(f"/v1/people/{EMAIL}/objections", headers=KEY, json={"reason": ""})
        assert empty.status_code == 422 and empty.json()["errors"][0]["field"] == "reason"
        theirs = await http.post(
            f"/v1/people/{EMAIL}/objections",
            headers=KEY,
            json={"reason": "no", "message_id": "m-p-bob"},
        )
        assert theirs.status_code == 404 and theirs.json()["errors"][0]["field"] == "message_id"
    assert _marketing(engine, "p-ada")  # nothing refused changed anything


def test_the_cli_shows_why_and_files_an_objection(settings: Settings, engine: Engine) -> None:
    runner = CliRunner()

    def cli(*args: str) -> Any:
        return runner.invoke(cli_app, list(args), prog_name="liftloop")

    why = cli("privacy", "why", EMAIL, "--json")
    assert why.exit_code == 0, why.output
    assert json.loads(why.stdout)["messages"][0]["decision"]["arm"] == "ten_off@email"
    filed = cli("privacy", "object", "p-bob", "--reason", "stop", "--json")
    assert filed.exit_code == 0, filed.output
    assert json.loads(filed.stdout)["profile_id"] == "p-bob" and not _marketing(engine, "p-bob")
    unknown = cli("privacy", "why", "nobody@example.com")
    assert unknown.exit_code == 2 and "no profile or identity" in unknown.stderr
