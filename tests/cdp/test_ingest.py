from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from tools.cdp.contracts import ContractRegistry
from tools.cdp.ingest import ingest
from tools.cdp.quarantine import quarantined, replay_quarantine
from tools.cdp.sql import cols
from tools.cdp.tables import Event, QuarantinedMessage


def _count(engine: Engine, model: object) -> int:
    from tools.cdp.sql import table_of

    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table_of(model))).scalar_one())


def test_batch_counts_and_replayed_batch_adds_nothing(
    engine: Engine, registry: ContractRegistry, m: Any
):
    batch = [
        m.order("m1", "u1", 10.0, "2026-01-01T10:00:00Z"),
        m.order("m2", "u2", 20.0, "2026-01-02T10:00:00Z"),
        m.order("m1", "u1", 10.0, "2026-01-01T10:00:00Z"),  # resent within the batch
        m.msg("track", "m3", uid="u1", event="not_a_contract", properties={}),
        m.msg("identify", "m4", aid="a1", traits={"email": "A@Example.com"}),
        {"messageId": "m5", "userId": "u1"},  # no type: unreadable, still kept
    ]
    first = ingest(engine, batch, source="test", registry=registry)
    assert (first.accepted, first.duplicates, first.quarantined) == (3, 1, 2)
    events, held = _count(engine, Event), _count(engine, QuarantinedMessage)
    again = ingest(engine, batch, source="test", registry=registry)
    assert (again.accepted, again.quarantined, again.duplicates) == (0, 0, 6)
    assert (_count(engine, Event), _count(engine, QuarantinedMessage)) == (events, held)


def test_violation_is_quarantined_with_field_and_reason(
    engine: Engine, registry: ContractRegistry, m: Any
):
    bad = m.msg(
        "track",
        "q1",
        uid="u1",
        event="order_completed",
        properties={"order_id": "o1", "revenue": "12.50"},
    )
    result = ingest(engine, [bad], source="shop", registry=registry)
    assert result.quarantined == 1 and result.accepted == 0
    [row] = quarantined(engine)
    assert row["field_path"] == "properties.revenue"
    assert row["reason"] == "must be number, got str"
    assert row["contract_version"] == 1 and row["source"] == "shop"


def test_replay_after_contract_fix(
    engine: Engine, registry: ContractRegistry, tmp_path: Path, m: Any
):
    wishes = [
        m.msg(
            "track", f"w{i}", uid="u1", event="wishlist_added", properties={"product_id": f"p{i}"}
        )
        for i in range(3)
    ]
    wishes.append(m.msg("track", "w9", uid="u1", event="wishlist_added", properties={}))
    assert ingest(engine, wishes, source="web", registry=registry).quarantined == 4
    assert replay_quarantine(engine, registry).replayed == 0  # nothing fixed yet

    (tmp_path / "wishlist_added.yaml").write_text(
        "event: wishlist_added\nversion: 1\nproperties:\n"
        "  product_id: {type: string, required: true}\n"
    )
    fixed = ContractRegistry.load(tmp_path)
    result = replay_quarantine(engine, fixed)
    assert (result.examined, result.replayed, result.still_quarantined) == (4, 3, 1)
    [left] = quarantined(engine)
    assert left["message_id"] == "w9" and left["field_path"] == "properties.product_id"
    ev = cols(Event)
    with engine.connect() as conn:
        names = conn.execute(select(ev.name).where(ev.message_id.in_(["w0", "w1", "w2"]))).all()
    assert len(names) == 3
    # The replayed messages are now ordinary duplicates; the open one stays a duplicate too.
    again = ingest(engine, wishes, source="web", registry=fixed)
    assert again.duplicates == 4 and again.accepted == 0


def test_unreadable_messages_name_field(engine: Engine, registry: ContractRegistry, m: Any):
    ingest(
        engine,
        [m.msg("track", "x1", event="order_completed", properties={})],
        source="t",
        registry=registry,
    )
    [row] = quarantined(engine)
    assert row["field_path"] == "userId"
    assert "userId or anonymousId" in row["reason"]


def test_contract_registry_picks_highest_version(tmp_path: Path):
    (tmp_path / "order_v2.yaml").write_text(
        "event: order_completed\nversion: 2\nproperties:\n"
        "  order_id: {type: string, required: true}\n"
        "  revenue: {type: number, required: true, minimum: 0}\n"
        "  currency: {type: string, required: true, enum: [EUR, USD]}\n"
    )
    reg = ContractRegistry.load(tmp_path)
    assert reg.get("order_completed").version == 2  # type: ignore[union-attr]
    v = reg.check("order_completed", {"order_id": "o", "revenue": 1.0})
    assert v is not None and (v.field, v.reason, v.version) == (
        "properties.currency",
        "is required",
        2,
    )
    v = reg.check("order_completed", {"order_id": "o", "revenue": -1, "currency": "EUR"})
    assert v is not None and v.reason == "must be at least 0.0"


def test_integers_beyond_64_bits_are_kept(engine: Engine, registry: ContractRegistry, m: Any):
    huge = 2**70
    msg = m.msg("identify", "big1", uid="u9", traits={"loyalty_points": huge, "nested": [huge]})
    assert ingest(engine, [msg], source="test", registry=registry).accepted == 1
    ev = cols(Event)
    with engine.connect() as conn:
        stored = conn.execute(select(ev.properties).where(ev.message_id == "big1")).scalar_one()
    assert stored["loyalty_points"] == huge and stored["nested"] == [huge]
