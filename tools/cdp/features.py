"""Profile features: running totals updated per ingested batch, windows read at query time.

Running totals (orders, revenue, first and last order in `cdp_features`; engagement events by
channel and hour in `cdp_engagement`) are added to in the database from each batch. Windowed
figures (orders and revenue over 30/90/365 days) and RFM are computed when asked, so they never
go stale as time passes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict
from sqlalchemy import case, delete, func, select
from sqlalchemy.engine import Connection, Engine

from tools.cdp.contracts import ContractRegistry
from tools.cdp.sql import as_utc, bulk_write, chunks, cols, table_of, utcnow
from tools.cdp.tables import EngagementCount, Event, ProfileFeatures

tracer = trace.get_tracer("liftloop.cdp")
_EV = cols(Event)
ORDER_EVENT = "order_completed"
WINDOWS = (30, 90, 365)


class Features(BaseModel):
    model_config = ConfigDict(frozen=True)

    profile_id: str
    orders: int
    revenue: float
    first_order_at: datetime | None
    last_order_at: datetime | None
    days_since_last_order: float | None
    orders_by_window: dict[int, int]
    revenue_by_window: dict[int, float]
    engagement: dict[str, dict[str, int]]
    preferred_send_hour: int | None


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


def features_for(
    engine: Engine, profile_ids: Sequence[str], as_of: datetime | None = None
) -> dict[str, Features]:
    """Features of the given profiles as of a time (default now; a naive time is read as UTC)."""
    as_of = utcnow() if as_of is None else as_utc(as_of)
    with tracer.start_as_current_span("cdp.features_for") as span:
        span.set_attribute("cdp.profiles", len(profile_ids))
        out: dict[str, Features] = {}
        table, eng = table_of(ProfileFeatures), cols(EngagementCount)
        revenue = _EV.properties["revenue"].as_float()
        with engine.connect() as conn:
            for part in chunks(list(profile_ids)):
                windows: dict[str, dict[str, float]] = {}
                sums = []
                for days in WINDOWS:
                    since = as_of - timedelta(days=days)
                    in_window = _EV.occurred_at >= since
                    sums.append(func.sum(case((in_window, 1), else_=0)).label(f"n{days}"))
                    sums.append(func.sum(case((in_window, revenue), else_=0.0)).label(f"r{days}"))
                stmt = (
                    select(_EV.profile_id, *sums)
                    .where(
                        _EV.profile_id.in_(part),
                        _EV.name == ORDER_EVENT,
                        _EV.occurred_at <= as_of,
                    )
                    .group_by(_EV.profile_id)
                )
                for r in conn.execute(stmt).mappings():
                    windows[r["profile_id"]] = {
                        k: float(v or 0) for k, v in r.items() if k != "profile_id"
                    }
                totals = {
                    r["profile_id"]: dict(r)
                    for r in conn.execute(
                        select(table).where(table.c.profile_id.in_(part))
                    ).mappings()
                }
                engagement: dict[str, list[tuple[str, str, int, int]]] = {}
                for e in conn.execute(
                    select(eng.profile_id, eng.channel, eng.event, eng.hour, eng.count).where(
                        eng.profile_id.in_(part)
                    )
                ):
                    engagement.setdefault(e[0], []).append((e[1], e[2], e[3], e[4]))
                for pid in part:
                    if pid in totals or pid in engagement:
                        out[pid] = _features(
                            pid,
                            totals.get(pid),
                            engagement.get(pid, []),
                            windows.get(pid, {}),
                            as_of,
                        )
        return out


def _features(
    pid: str,
    totals: dict[str, Any] | None,
    engagement: list[tuple[str, str, int, int]],
    windows: dict[str, float],
    as_of: datetime,
) -> Features:
    hours = np.zeros(24, dtype=np.int64)
    by_channel: dict[str, dict[str, int]] = {}
    for channel, event, hour, count in engagement:
        hours[hour] += count
        per_event = by_channel.setdefault(channel, {})
        per_event[event] = per_event.get(event, 0) + count
    totals = totals or {"orders": 0, "revenue": 0.0, "first_order_at": None, "last_order_at": None}
    last = totals["last_order_at"]
    return Features(
        profile_id=pid,
        orders=totals["orders"],
        revenue=round(totals["revenue"], 6),
        first_order_at=totals["first_order_at"],
        last_order_at=last,
        days_since_last_order=None if last is None else (as_of - last).total_seconds() / 86400,
        orders_by_window={d: int(windows.get(f"n{d}", 0)) for d in WINDOWS},
        revenue_by_window={d: round(windows.get(f"r{d}", 0.0), 6) for d in WINDOWS},
        engagement=by_channel,
        preferred_send_hour=int(hours.argmax()) if hours.sum() > 0 else None,
    )


def rfm_scores(engine: Engine, as_of: datetime | None = None) -> dict[str, str]:
    """RFM quintile scores ("555" best) for every profile with at least one order."""
    as_of = utcnow() if as_of is None else as_utc(as_of)
    with tracer.start_as_current_span("cdp.rfm_scores") as span:
        table = table_of(ProfileFeatures)
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    table.c.profile_id, table.c.last_order_at, table.c.orders, table.c.revenue
                ).where(table.c.orders > 0)
            ).all()
        span.set_attribute("cdp.profiles", len(rows))
        if not rows:
            return {}
        recency = np.array([(as_of - r[1]).total_seconds() for r in rows])
        frequency = np.array([r[2] for r in rows], dtype=float)
        monetary = np.array([r[3] / r[2] for r in rows], dtype=float)

        def quintile(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
            # Rank-based so ties and skew still fill five groups as evenly as they can.
            ranks = values.argsort(kind="stable").argsort(kind="stable")
            return 1 + (ranks * 5) // len(values)

        r_score = 6 - quintile(recency)  # recent buyers score high
        f_score, m_score = quintile(frequency), quintile(monetary)
        return {r[0]: f"{r_score[i]}{f_score[i]}{m_score[i]}" for i, r in enumerate(rows)}
