from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from tools.cdp.consent import consented
from tools.cdp.contracts import ContractRegistry
from tools.cdp.features import features_for, rfm_scores
from tools.cdp.ingest import ingest
from tools.cdp.sql import cols
from tools.cdp.tables import Profile, TraitHistory, TraitState


def _consent(m: Any, mid: str, uid: str, granted: bool, ts: str, **kw: Any) -> dict[str, Any]:
    statement = {"purpose": "marketing", "channel": "email", "granted": granted, **kw}
    return m.msg("consent", mid, uid=uid, ts=ts, consent=[statement])


def test_latest_consent_statement_wins_by_time(engine: Engine, registry: ContractRegistry, m: Any):
    # The later statement arrives first: time decides, not arrival.
    ingest(
        engine,
        [_consent(m, "c2", "u1", False, "2026-02-01T00:00:00Z")],
        source="cmp",
        registry=registry,
    )
    ingest(
        engine,
        [_consent(m, "c1", "u1", True, "2026-01-01T00:00:00Z")],
        source="cmp",
        registry=registry,
    )
    ingest(
        engine,
        [_consent(m, "c3", "u2", True, "2026-01-01T00:00:00Z", lawfulBasis="legitimate_interests")],
        source="cmp",
        registry=registry,
    )
    assert consented(engine, ["u1", "u2", "nobody"], "marketing", "email") == {"u2"}
    assert consented(engine, ["u2"], "marketing", "sms") == set()


def test_unsubscribe_complaint_and_hard_bounce_withdraw(
    engine: Engine, registry: ContractRegistry, m: Any
):
    people = ["u1", "u2", "u3", "u4"]
    grants = [
        m.msg(
            "consent",
            f"g{p}",
            uid=p,
            ts="2026-01-01T00:00:00Z",
            consent=[
                {"purpose": pur, "channel": "email", "granted": True}
                for pur in ("marketing", "analytics")
            ],
        )
        for p in people
    ]
    ingest(engine, grants, source="cmp", registry=registry)
    later = "2026-01-05T00:00:00Z"
    events = [
        m.msg("track", "e1", uid="u1", ts=later, event="unsubscribed", properties={}),
        m.msg(
            "track",
            "e2",
            uid="u2",
            ts=later,
            event="complaint_received",
            properties={"channel": "email"},
        ),
        m.msg(
            "track",
            "e3",
            uid="u3",
            ts=later,
            event="message_bounced",
            properties={"channel": "email", "bounce_type": "hard"},
        ),
        m.msg(
            "track",
            "e4",
            uid="u4",
            ts=later,
            event="message_bounced",
            properties={"channel": "email", "bounce_type": "soft"},
        ),
    ]
    ingest(engine, events, source="esp", registry=registry)
    assert consented(engine, people, "marketing", "email") == {"u4"}
    # An unsubscribe from marketing leaves analytics; complaints and hard bounces do not.
    assert consented(engine, people, "analytics", "email") == {"u1", "u4"}


def test_traits_last_write_wins_with_history(engine: Engine, registry: ContractRegistry, m: Any):
    newer = m.msg(
        "identify",
        "t2",
        uid="u1",
        ts="2026-03-01T00:00:00Z",
        traits={"country": "DE", "plan": "gold"},
    )
    older = m.msg(
        "identify",
        "t1",
        uid="u1",
        ts="2026-02-01T00:00:00Z",
        traits={"country": "FR", "email": "u1@example.com"},
    )
    ingest(engine, [newer], source="crm", registry=registry)
    ingest(engine, [older], source="shop", registry=registry)
    p, ts = cols(Profile), cols(TraitState)
    with engine.connect() as conn:
        country, email, traits = conn.execute(
            select(p.country, p.email, p.traits).where(p.id == "u1")
        ).one()
        states = dict(conn.execute(select(ts.trait, ts.source).where(ts.profile_id == "u1")).all())
        history = conn.execute(select(cols(TraitHistory).id)).all()
    assert (country, email) == ("DE", "u1@example.com")
    assert traits == {"country": "DE", "plan": "gold", "email": "u1@example.com"}
    assert states == {"country": "crm", "plan": "crm", "email": "shop"}
    assert len(history) == 4


def test_features_from_events(engine: Engine, registry: ContractRegistry, m: Any):
    batch = [
        m.order("o1", "u1", 100.0, "2025-06-01T12:00:00Z"),
        m.order("o2", "u1", 50.0, "2026-01-20T12:00:00Z"),
        m.order("o3", "u2", 10.0, "2026-01-30T12:00:00Z"),
        m.msg(
            "track", "x1", uid="u1", ts="2026-01-21T19:05:00Z", event="email_opened", properties={}
        ),
        m.msg(
            "track", "x2", uid="u1", ts="2026-01-22T19:40:00Z", event="email_clicked", properties={}
        ),
        m.msg(
            "track", "x3", uid="u1", ts="2026-01-23T07:00:00Z", event="push_opened", properties={}
        ),
    ]
    ingest(engine, batch[:3], source="shop", registry=registry)
    ingest(engine, batch[3:], source="esp", registry=registry)  # incremental update
    as_of = datetime(2026, 2, 1, tzinfo=UTC)
    f = features_for(engine, ["u1", "u2"], as_of=as_of)
    u1 = f["u1"]
    assert (u1.orders, u1.revenue) == (2, 150.0)
    assert u1.orders_by_window == {30: 1, 90: 1, 365: 2}
    assert u1.revenue_by_window == {30: 50.0, 90: 50.0, 365: 150.0}
    assert u1.engagement == {
        "email": {"email_opened": 1, "email_clicked": 1},
        "push": {"push_opened": 1},
    }
    assert u1.preferred_send_hour == 19
    assert u1.days_since_last_order == 11.5
    assert f["u2"].preferred_send_hour is None
    scores = rfm_scores(engine, as_of=as_of)
    # u2 bought more recently, u1 more often and for more.
    assert scores["u2"][0] > scores["u1"][0] and scores["u1"][1:] > scores["u2"][1:]
