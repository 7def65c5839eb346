from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from liftloop import erasure
from liftloop.erasure import erase_person, export_person
from liftloop.loop.tables import DecisionRecord, OutboxMessage
from liftloop.settings import Settings
from tools.audit import timeline
from tools.cdp.contracts import ContractRegistry
from tools.cdp.errors import UnknownIdentityError
from tools.cdp.ingest import ingest
from tools.cdp.sql import cols, insert, table_of
from tools.cdp.tables import Event, Identity, Profile

NOW = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file outboxes the erasure rewrites are this test's own."""
    settings = Settings(data_dir=tmp_path / "data")
    monkeypatch.setattr(erasure, "get_settings", lambda: settings)


@pytest.fixture
def person(engine: Engine, registry: ContractRegistry, m: Any) -> Engine:
    msgs = [
        m.msg(
            "identify",
            "p1",
            uid="u1",
            aid="a1",
            traits={"email": "eve@example.com", "first_name": "Eve"},
        ),
        m.order("p2", "u1", 80.0, "2026-02-01T10:00:00Z"),
        m.msg(
            "track",
            "p3",
            uid="u1",
            event="email_opened",
            properties={"campaign_id": "c1", "email": "eve@example.com"},
        ),
        m.msg(
            "consent",
            "p4",
            uid="u1",
            consent=[{"purpose": "marketing", "channel": "email", "granted": True}],
        ),
        m.msg("track", "p5", uid="u1", event="mystery", properties={}),  # quarantined
        m.order("p6", "bob", 20.0, "2026-02-01T10:00:00Z"),
    ]
    ingest(engine, msgs, source="shop", registry=registry)
    with engine.begin() as conn:
        for pid in ("u1", "bob"):
            conn.execute(
                insert(conn, DecisionRecord),
                [
                    {
                        "campaign_id": "c1",
                        "cycle": 1,
                        "profile_id": pid,
                        "shard": 0,
                        "segment": "womens",
                        "holdout": False,
                        "arm": "ten_off",
                        "offer_id": "ten_off",
                        "channel": "email",
                        "propensity": 0.5,
                        "policy": "thompson",
                        "decided_at": NOW,
                    }
                ],
            )
            conn.execute(
                insert(conn, OutboxMessage),
                [
                    {
                        "id": f"msg-{pid}",
                        "campaign_id": "c1",
                        "cycle": 1,
                        "profile_id": pid,
                        "channel": "email",
                        "shard": 0,
                        "variant_id": "v1",
                        "recipient": f"{pid}@example.com",
                        "created_at": NOW,
                    }
                ],
            )
    return engine


def test_export_gives_everything(person: Engine):
    data = export_person(person, "eve@example.com", actor="dpo")
    assert data["profile_id"] == "u1"
    assert {i["kind"] for i in data["identities"]} == {"user_id", "anonymous_id", "email"}
    assert len(data["events"]) == 4 and len(data["consents"]) == 1
    assert len(data["quarantine"]) == 1 and len(data["outbox"]) == 1
    json.dumps(data)  # JSON-ready as promised


def test_erase_removes_person_and_keeps_aggregates(person: Engine, registry: ContractRegistry):
    ev = cols(Event)
    with person.connect() as conn:
        events_before = conn.execute(select(func.count()).select_from(table_of(Event))).scalar()
    report = erase_person(person, "a1", registry, actor="dpo")
    assert report.rows["events_pseudonymised"] == 4 and report.rows["profiles"] == 1
    with pytest.raises(UnknownIdentityError):
        export_person(person, "u1", actor="dpo")
    with person.connect() as conn:
        assert conn.execute(select(func.count()).select_from(table_of(Event))).scalar() == (
            events_before
        )
        props = dict(
            conn.execute(
                select(ev.name, ev.properties).where(ev.profile_id == report.pseudonym)
            ).all()
        )
        assert props["order_completed"]["revenue"] == 80.0  # measurement keeps revenue
        assert "email" not in props["email_opened"] and props["$identify"] == {}
        outbox = dict(
            conn.execute(
                select(cols(OutboxMessage).profile_id, cols(OutboxMessage).recipient)
            ).all()
        )
        assert outbox == {report.pseudonym: None, "bob": "bob@example.com"}
        decided = set(conn.execute(select(cols(DecisionRecord).profile_id)).scalars())
        assert decided == {report.pseudonym, "bob"}
        assert conn.execute(select(cols(Identity).value)).scalars().all() == ["bob"]
        assert conn.execute(select(cols(Profile).id)).scalars().all() == ["bob"]
    audit = timeline(person)
    assert [a.kind for a in audit] == ["privacy.erase"]
    assert audit[0].subject == report.pseudonym and audit[0].actor == "dpo"
    assert '"u1"' not in json.dumps(audit[0].details) and "eve@" not in audit[0].model_dump_json()
