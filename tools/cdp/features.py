"""Profile features: running totals updated per ingested batch.

Running totals (orders, revenue, first and last order in `cdp_features`; engagement events by
channel and hour in `cdp_engagement`) are added to in the database from each batch, and rebuilt
from a profile's events after a merge moved them. Windows over time (orders in the last 90
days) are segment conditions on the events, so they never go stale as time passes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.engine import Connection

from tools.cdp.contracts import ContractRegistry
from tools.cdp.sql import bulk_write, chunks, cols, table_of, utcnow
from tools.cdp.tables import EngagementCount, Event, ProfileFeatures

_EV = cols(Event)
ORDER_EVENT = "order_completed"


def _revenue(props: Any) -> float:
    value = props.get("revenue") if isinstance(props, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _later(table: str, column: str, pick: str) -> str:
    # Portable min/max that ignores NULL on both SQLite and PostgreSQL.
    return (
        f"CASE WHEN {table}.{column} IS NULL OR excluded.{column} {pick} {table}.{column} "
        f"THEN excluded.{column} ELSE {table}.{column} END"
    )


def apply_events(
    conn: Connection,
    events: Sequence[tuple[str, str, Any, datetime]],
    registry: ContractRegistry,
    *,
    rebuild: Iterable[str] = (),
) -> None:
    """Add (profile_id, event, properties, time) to the running totals of their profiles.

    Totals are added in the database (count = count + new), so nothing is read back; profiles
    in `rebuild` start from zero (after a merge moved their events)."""
    now = utcnow()
    fresh = sorted(set(rebuild))
    if fresh:
        for model in (ProfileFeatures, EngagementCount):
            table = table_of(model)
            conn.execute(delete(table).where(table.c.profile_id.in_(fresh)))
    orders: dict[str, dict[str, Any]] = {}
    engaged: dict[tuple[str, str, str, int], int] = {}
    # The engagement channel of each event name, looked up once per batch instead of per event.
    channel_of: dict[str, str | None] = {}
    for pid, name, props, at in events:
        if name == ORDER_EVENT:
            row = orders.get(pid)
            if row is None:
                row = orders[pid] = {
                    "profile_id": pid,
                    "orders": 0,
                    "revenue": 0.0,
                    "first_order_at": at,
                    "last_order_at": at,
                    "updated_at": now,
                }
            row["orders"] += 1
            row["revenue"] += _revenue(props)
            if at < row["first_order_at"]:
                row["first_order_at"] = at
            if at > row["last_order_at"]:
                row["last_order_at"] = at
            continue
        if name in channel_of:
            channel = channel_of[name]
        else:
            contract = registry.get(name)
            channel = channel_of[name] = (
                contract.channel if contract is not None and contract.engagement else None
            )
        if channel is not None:
            key = (pid, channel, name, at.hour)
            engaged[key] = engaged.get(key, 0) + 1
    f = ProfileFeatures.__tablename__
    bulk_write(
        conn,
        ProfileFeatures,
        list(orders.values()),
        keys=["profile_id"],
        on_conflict="update",
        set_sql={
            "orders": f"{f}.orders + excluded.orders",
            "revenue": f"{f}.revenue + excluded.revenue",
            "first_order_at": _later(f, "first_order_at", "<"),
            "last_order_at": _later(f, "last_order_at", ">"),
        },
    )
    e = EngagementCount.__tablename__
    bulk_write(
        conn,
        EngagementCount,
        [
            {"profile_id": k[0], "channel": k[1], "event": k[2], "hour": k[3], "count": n}
            for k, n in engaged.items()
        ],
        keys=["profile_id", "channel", "event", "hour"],
        on_conflict="update",
        set_sql={"count": f"{e}.count + excluded.count"},
    )


def events_of(conn: Connection, profile_ids: Sequence[str]) -> list[tuple[str, str, Any, datetime]]:
    out: list[tuple[str, str, Any, datetime]] = []
    for part in chunks(list(profile_ids)):
        stmt = select(_EV.profile_id, _EV.name, _EV.properties, _EV.occurred_at).where(
            _EV.profile_id.in_(part)
        )
        out.extend((r[0], r[1], r[2], r[3]) for r in conn.execute(stmt))
    return out
