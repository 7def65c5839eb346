from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from tools.cdp.consent import latest_consent
from tools.cdp.contracts import ContractRegistry
from tools.cdp.ingest import ingest
from tools.cdp.sql import as_utc, cols
from tools.cdp.tables import EngagementCount, Profile, ProfileFeatures, TraitHistory, TraitState


def consented(engine: Engine, profile_ids: list[str], purpose: str, channel: str) -> set[str]:
    """Who among `profile_ids` may be contacted: the latest statement per profile granted, as
    the segment and send stages join `latest_consent`."""
    latest = latest_consent(purpose, [channel]).subquery()
    with engine.connect() as conn:
        return set(
            conn.execute(
                select(latest.c.profile_id).where(
                    latest.c.granted, latest.c.profile_id.in_(profile_ids)
                )
            ).scalars()
        )


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


def test_running_totals_from_events(engine: Engine, registry: ContractRegistry, m: Any):
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
    totals, counts = cols(ProfileFeatures), cols(EngagementCount)
    with engine.connect() as conn:
        orders = {
            r[0]: r[1:]
            for r in conn.execute(
                select(totals.profile_id, totals.orders, totals.revenue, totals.last_order_at)
            )
        }
        engaged = set(conn.execute(select(counts.channel, counts.event, counts.hour, counts.count)))
    assert orders["u1"][:2] == (2, 150.0) and orders["u2"][:2] == (1, 10.0)
    assert as_utc(orders["u1"][2]) == datetime(2026, 1, 20, 12, tzinfo=UTC)
    # Engagement by channel, event and UTC hour; orders are not engagement.
    assert engaged == {
        ("email", "email_opened", 19, 1),
        ("email", "email_clicked", 19, 1),
        ("push", "push_opened", 7, 1),
    }
