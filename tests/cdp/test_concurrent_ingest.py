"""Ingestion from several threads at once (API workers, parallel senders): a message that
arrives twice at the same moment is still counted, and added to features, once; an erasure
is not undone by an ingest that runs while it does."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from tests.audit_support import audit_for
from tools.cdp import privacy
from tools.cdp.contracts import ContractRegistry
from tools.cdp.ingest import IngestResult, ingest
from tools.cdp.privacy import erase_person
from tools.cdp.sql import cols, table_of
from tools.cdp.tables import Event, Identity, Profile, ProfileFeatures

SENDERS = 4


def orders(n: int, people: int) -> list[dict[str, Any]]:
    return [
        {
            "type": "track",
            "messageId": f"order-{i}",
            "userId": f"u{i % people}",
            "event": "order_completed",
            "properties": {"order_id": f"o{i}", "revenue": 10.0},
            "timestamp": "2026-05-01T10:00:00Z",
        }
        for i in range(n)
    ]


def test_the_same_batch_from_several_senders_at_once_is_counted_once(
    engine: Engine, registry: ContractRegistry
) -> None:
    batch = orders(400, 150)
    results: list[IngestResult] = []
    errors: list[BaseException] = []
    start = threading.Barrier(SENDERS)

    def send() -> None:
        try:
            start.wait()
            results.append(ingest(engine, batch, source="test", registry=registry))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=send) for _ in range(SENDERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(r.accepted for r in results) == len(batch)
    assert sum(r.duplicates for r in results) == len(batch) * (SENDERS - 1)
    features = table_of(ProfileFeatures)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(table_of(Event))).scalar() == 400
        total_orders, revenue = conn.execute(
            select(func.sum(features.c.orders), func.sum(features.c.revenue))
        ).one()
    assert total_orders == 400
    assert revenue == 4000.0


def test_an_ingest_for_a_person_being_erased_waits_for_the_erasure(
    engine: Engine, registry: ContractRegistry, m: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(
        engine, [m.order("e1", "u1", 10.0, "2026-05-01T10:00:00Z")], source="t", registry=registry
    )
    between = threading.Event()  # the erasure has read the person's rows, not yet written
    release = threading.Event()
    scrub = privacy._scrub

    def paused(*args: Any) -> Any:
        if not between.is_set():
            between.set()
            release.wait(10)
        return scrub(*args)

    monkeypatch.setattr(privacy, "_scrub", paused)
    eraser = threading.Thread(
        target=erase_person,
        args=(engine, "u1", registry),
        kwargs={"actor": "dpo", "audit": audit_for(engine)},
    )
    eraser.start()
    assert between.wait(10)
    sent = threading.Event()

    def send() -> None:
        ingest(
            engine,
            [m.order("e2", "u1", 20.0, "2026-05-02T10:00:00Z")],
            source="t",
            registry=registry,
        )
        sent.set()

    sender = threading.Thread(target=send)
    sender.start()
    finished_during_erasure = sent.wait(1.0)
    release.set()
    eraser.join(30)
    sender.join(30)
    assert not finished_during_erasure
    # The later order started a new profile for u1; the erased order kept only a pseudonym.
    ev = cols(Event)
    with engine.connect() as conn:
        owners = dict(conn.execute(select(ev.message_id, ev.profile_id)).all())
        profiles = set(conn.execute(select(cols(Profile).id)).scalars())
        identities = conn.execute(select(cols(Identity).profile_id)).scalars().all()
    assert owners["e1"].startswith("erased-")
    assert owners["e2"] in profiles
    assert identities == [owners["e2"]]
