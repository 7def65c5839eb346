"""Statement times: a stamp from the future or from before any sane clock is quarantined, and
no stamp ahead of its arrival, nor a row stored before these checks, can lock consent or a
trait against later statements."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from tools.cdp.consent import latest_consent
from tools.cdp.contracts import ContractRegistry
from tools.cdp.errors import CdpError
from tools.cdp.ingest import ingest
from tools.cdp.quarantine import quarantined, replay_quarantine
from tools.cdp.segments import count_segment
from tools.cdp.sql import cols, insert
from tools.cdp.tables import Consent, Event, Profile, TraitState

T = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
EMAIL_MARKETING = {"consent": {"purpose": "marketing", "channel": "email"}}


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _consent(m: Any, mid: str, granted: bool, ts: str, uid: str = "u1") -> dict[str, Any]:
    statement = {"purpose": "marketing", "channel": "email", "granted": granted}
    return m.msg("consent", mid, uid=uid, ts=ts, consent=[statement])


def _unsubscribe(m: Any, mid: str, ts: str, uid: str = "u1") -> dict[str, Any]:
    return m.msg("track", mid, uid=uid, ts=ts, event="unsubscribed", properties={})


def _held(engine: Engine) -> dict[str, tuple[str, str]]:
    return {r["message_id"]: (r["field_path"], r["reason"]) for r in quarantined(engine)}


def _allowed(engine: Engine, now: datetime | None = None) -> set[str]:
    """Whether u1 may get marketing e-mail at `now`, as the segment and send stages read it."""
    latest = latest_consent("marketing", ["email"], now=now).subquery()
    with engine.connect() as conn:
        return set(
            conn.execute(
                select(latest.c.profile_id).where(latest.c.granted, latest.c.profile_id == "u1")
            ).scalars()
        )


def _store_legacy_grant(engine: Engine, at: datetime) -> None:
    """A grant as an earlier version stored it, stamp and all."""
    with engine.begin() as conn:
        conn.execute(
            insert(conn, Consent),
            [
                {
                    "profile_id": "u1",
                    "channel": "email",
                    "purpose": "marketing",
                    "granted": True,
                    "source": "web",
                    "lawful_basis": "consent",
                    "recorded_at": at,
                }
            ],
        )


def test_consent_stamped_9999_is_quarantined_and_an_unsubscribe_withdraws(
    engine: Engine, registry: ContractRegistry, m: Any
):
    ingest(
        engine, [_consent(m, "g0", True, "2026-01-01T00:00:00Z")], source="crm", registry=registry
    )
    forged = ingest(
        engine, [_consent(m, "g9", True, "9999-12-31T00:00:00Z")], source="web", registry=registry
    )
    assert forged.quarantined == 1
    field, reason = _held(engine)["g9"]
    assert field == "timestamp" and "future" in reason and "9999-12-31" in reason
    assert _allowed(engine) == {"u1"}
    ingest(engine, [_unsubscribe(m, "un", "2026-02-01T00:00:00Z")], source="esp", registry=registry)
    assert _allowed(engine) == set()


@pytest.mark.parametrize("withdrawal", ["unsubscribe", "granted_false"])
def test_a_grant_stored_from_the_future_cannot_lock_consent(
    engine: Engine, registry: ContractRegistry, m: Any, withdrawal: str
):
    """A 9999 grant written before the checks existed: the later withdrawal wins at send time,
    in segments and in the loop's `latest_consent`."""
    ingest(engine, [m.msg("identify", "i", uid="u1", traits={})], source="crm", registry=registry)
    _store_legacy_grant(engine, datetime(9999, 12, 31, tzinfo=UTC))
    withdraw = (
        _unsubscribe(m, "w", "2026-02-01T00:00:00Z")
        if withdrawal == "unsubscribe"
        else _consent(m, "w", False, "2026-02-01T00:00:00Z")
    )
    ingest(engine, [withdraw], source="esp", registry=registry)
    assert _allowed(engine) == set()
    assert count_segment(engine, EMAIL_MARKETING) == 0
    with engine.connect() as conn:
        latest = conn.execute(latest_consent("marketing", ["email"])).all()
    assert [tuple(r) for r in latest] == [("u1", "email", False)]


def test_granted_false_after_a_grant_stamped_ahead_withdraws(
    engine: Engine, registry: ContractRegistry, m: Any
):
    """A grant stamped four minutes ahead is within the allowed skew, but counts from its
    arrival: a withdrawal a second later, stamped correctly, wins."""
    grant = _consent(m, "g", True, _iso(T + timedelta(minutes=4)))
    assert ingest(engine, [grant], source="web", registry=registry, now=T).accepted == 1
    later = T + timedelta(seconds=1)
    withdraw = _consent(m, "w", False, _iso(later))
    ingest(engine, [withdraw], source="cmp", registry=registry, now=later)
    assert _allowed(engine, now=T + timedelta(hours=1)) == set()
    with engine.connect() as conn:
        times = conn.execute(select(cols(Consent).recorded_at).order_by(cols(Consent).id)).all()
    assert [t[0] for t in times] == [T, later]


def test_an_unsubscribe_stamped_ahead_counts_from_its_arrival(
    engine: Engine, registry: ContractRegistry, m: Any
):
    ingest(engine, [_consent(m, "g", True, _iso(T))], source="cmp", registry=registry, now=T)
    ahead = _unsubscribe(m, "u", _iso(T + timedelta(minutes=3)))
    ingest(engine, [ahead], source="esp", registry=registry, now=T + timedelta(seconds=5))
    regrant = _consent(m, "r", True, _iso(T + timedelta(minutes=1)))
    ingest(engine, [regrant], source="cmp", registry=registry, now=T + timedelta(minutes=1))
    assert _allowed(engine, now=T + timedelta(hours=1)) == {"u1"}


@pytest.mark.parametrize(
    "stamp", ["1900-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "0001-01-01T00:00:00Z"]
)
def test_an_event_from_before_any_sane_clock_is_quarantined(
    engine: Engine, registry: ContractRegistry, m: Any, stamp: str
):
    batch = [m.order("old", "u1", 10.0, stamp), m.order("new", "u1", 10.0, "2026-01-01T00:00:00Z")]
    result = ingest(engine, batch, source="shop", registry=registry)
    assert (result.accepted, result.quarantined) == (1, 1)
    field, reason = _held(engine)["old"]
    assert field == "timestamp" and "earliest accepted" in reason


def test_every_kind_of_message_is_held_to_the_window(
    engine: Engine, registry: ContractRegistry, m: Any
):
    future = _iso(T + timedelta(minutes=6))
    batch = [
        m.msg("identify", "i", uid="u1", ts=future, traits={"plan": "gold"}),
        m.msg("alias", "a", uid="u1", ts=future, previousId="anon-1"),
        _consent(m, "c", True, future),
        m.order("o", "u1", 10.0, future),
        m.order("ok", "u1", 10.0, _iso(T + timedelta(minutes=4))),
    ]
    result = ingest(engine, batch, source="web", registry=registry, now=T)
    assert (result.accepted, result.quarantined) == (1, 4)
    assert {f for f, _ in _held(engine).values()} == {"timestamp"}


def test_the_limits_are_parameters(engine: Engine, registry: ContractRegistry, m: Any):
    batch = [
        m.order("ahead", "u1", 10.0, _iso(T + timedelta(minutes=30))),
        m.order("old", "u1", 10.0, "1985-06-01T00:00:00Z"),
    ]
    result = ingest(
        engine,
        batch,
        source="shop",
        registry=registry,
        now=T,
        max_future_skew=timedelta(hours=1),
        earliest=datetime(1980, 1, 1, tzinfo=UTC),
    )
    assert result.accepted == 2
    with pytest.raises(CdpError) as caught:
        ingest(engine, [], source="shop", registry=registry, max_future_skew=timedelta(-1))
    assert caught.value.field == "max_future_skew"


def test_a_message_quarantined_as_early_passes_replay_once_its_time_has_come(
    engine: Engine, registry: ContractRegistry, m: Any
):
    now = datetime.now(UTC)
    order = m.order("o", "u1", 10.0, _iso(now - timedelta(days=1)))
    # Its batch arrived (by its clock) two days ago: the order was then from the future.
    held = ingest(engine, [order], source="shop", registry=registry, now=now - timedelta(days=2))
    assert held.quarantined == 1
    result = replay_quarantine(engine, registry)
    assert (result.replayed, result.still_quarantined) == (1, 0)


def test_a_trait_stored_from_the_future_yields_to_later_statements(
    engine: Engine, registry: ContractRegistry, m: Any
):
    ingest(engine, [m.msg("identify", "i0", uid="u1", traits={})], source="crm", registry=registry)
    with engine.begin() as conn:
        conn.execute(
            insert(conn, TraitState),
            [
                {
                    "profile_id": "u1",
                    "trait": "plan",
                    "value": "forged",
                    "source": "web",
                    "recorded_at": datetime(9999, 1, 1, tzinfo=UTC),
                }
            ],
        )
    forged = m.msg("identify", "i9", uid="u1", ts="9999-01-01T00:00:00Z", traits={"plan": "x"})
    assert ingest(engine, [forged], source="web", registry=registry).quarantined == 1
    later = m.msg("identify", "i1", uid="u1", ts="2026-02-01T00:00:00Z", traits={"plan": "gold"})
    ingest(engine, [later], source="crm", registry=registry)
    with engine.connect() as conn:
        traits = conn.execute(
            select(cols(Profile).traits).where(cols(Profile).id == "u1")
        ).scalar_one()
        events = conn.execute(select(cols(Event).message_id)).scalars().all()
    assert traits == {"plan": "gold"}
    assert "i9" not in events
