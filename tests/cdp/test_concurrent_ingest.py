"""Ingestion from several threads at once (API workers, parallel senders): a message that
arrives twice at the same moment is still counted, and added to features, once."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from liftloop.tables import Event
from tools.cdp._sql import table_of
from tools.cdp.contracts import ContractRegistry
from tools.cdp.ingest import IngestResult, ingest
from tools.cdp.tables import ProfileFeatures

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
