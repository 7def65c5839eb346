"""The CDNOW 1/10 sample through ingestion and segments, against published figures.

Fader, Hardie and Lee (2005), "Counting Your Customers the Easy Way", use this sample: 2,357
customers who first bought in Q1 1997, observed in a 39-week calibration period; 1,411 of them
made no repeat purchase in it. Repeat purchases count distinct purchase days, as in the
lifetimes package's summary (cdnow_customers_summary.csv, the `frequency` column).
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from tools.cdp.contracts import ContractRegistry
from tools.cdp.ingest import ingest
from tools.cdp.segments import count_segment

CALIBRATION_END = datetime(1997, 10, 1, tzinfo=UTC)  # 39 weeks after 1 January 1997


@pytest.fixture
def cdnow(engine: Engine, registry: ContractRegistry, data_file: Callable[[str], Path]) -> Engine:
    days: dict[tuple[str, str], float] = {}
    for line in data_file("lifetimes_CDNOW_sample.txt").read_text().splitlines():
        if line.strip():
            customer, _, day, _, dollars = line.split()
            days[(customer, day)] = days.get((customer, day), 0.0) + float(dollars)
    msgs = [
        {
            "type": "track",
            "messageId": f"cdnow-{customer}-{day}",
            "userId": customer,
            "event": "order_completed",
            "timestamp": f"{day[:4]}-{day[4:6]}-{day[6:]}T12:00:00Z",
            "properties": {"order_id": f"{customer}-{day}", "revenue": round(amount, 2)},
        }
        for (customer, day), amount in days.items()
    ]
    for start in range(0, len(msgs), 1000):
        result = ingest(engine, msgs[start : start + 1000], source="cdnow", registry=registry)
        assert result.accepted == len(msgs[start : start + 1000])
    return engine


def test_cdnow_customers_and_repeat_buyers(cdnow: Engine, data_file: Callable[[str], Path]):
    buyers = {"event": "order_completed", "count_gte": 1}
    assert count_segment(cdnow, buyers, as_of=CALIBRATION_END) == 2357  # published

    def with_days(n: int) -> int:
        spec = {"event": "order_completed", "within": "273d", "count_eq": n}
        return count_segment(cdnow, spec, as_of=CALIBRATION_END)

    assert with_days(1) == 1411  # published: no repeat purchase in calibration
    with data_file("lifetimes_cdnow_customers_summary.csv").open() as handle:
        frequency = Counter(int(float(row["frequency"])) for row in csv.DictReader(handle))
    for repeats in (1, 2, 3):
        assert with_days(repeats + 1) == frequency[repeats]
