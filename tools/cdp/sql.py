"""Small helpers for SQL that must read the same on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from sqlalchemy import JSON, Column, DateTime, Table, TypeDecorator
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql.base import ReadOnlyColumnCollection

T = TypeVar("T")
# Stays under SQLite's bound-parameter limit with room for other parameters.
CHUNK = 900


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Aware UTC, as the tables store it; a naive time is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def driver_time(value: Any) -> datetime:
    """A time as `fetch_in` returns it (text on SQLite), as the tables' type would: aware UTC."""
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return as_utc(value)


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def fetch_in(
    conn: Connection, sql: str, values: Sequence[Any], *params: Any
) -> list[Sequence[Any]]:
    """The rows of `sql` for `values`, a chunk at a time, straight through the driver.

    `sql` ends in a column followed by `{in}`, which becomes the membership test; `{p}` is the
    placeholder of each of `params`, which come first. SQLAlchemy's expanding IN names, binds
    and processes every value apart, which costs more than an indexed lookup of a batch's ids.
    Results are the driver's raw values (on SQLite a time is text)."""
    if not values:
        return []
    rows: list[Sequence[Any]] = []
    if conn.dialect.name == "postgresql":
        # One array parameter whatever the count: nothing to chunk.
        stmt = sql.format(p="%s", **{"in": "= ANY(%s)"})
        rows.extend(conn.exec_driver_sql(stmt, (*params, list(values))).all())
        return rows
    for part in chunks(values):
        stmt = sql.format(p="?", **{"in": f"IN ({', '.join(['?'] * len(part))})"})
        rows.extend(conn.exec_driver_sql(stmt, (*params, *part)).all())
    return rows


def one_writer_at_a_time(conn: Connection, name: str) -> None:
    """Hold the transaction of `conn` until its end as the only one past this point for `name`.

    For read-then-write work that must see every commit before it, such as deduplicating a batch
    and then adding it to running totals. On SQLite the transaction starts with the database's
    write lock (BEGIN IMMEDIATE) unless a statement already took it, since the driver only
    begins a transaction at the first write and reads before it would see no one's lock. On
    PostgreSQL it takes a transaction-scoped advisory lock named by `name`."""
    if conn.dialect.name == "sqlite":
        driver: Any = conn.connection.driver_connection
        if not driver.in_transaction:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext(%s))", (name,))


def dumps(value: Any) -> str:
    """JSON text for a JSON column. orjson writes the small dict of an event several times
    faster than json.dumps, which builds a new encoder per call."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        # orjson refuses integers beyond 64 bits, which JSON (and a client) may send.
        return json.dumps(value)


def insert(conn: Connection, table: Any) -> Any:
    """An INSERT that knows ON CONFLICT on both dialects."""
    target: Table = table.__table__ if hasattr(table, "__table__") else table
    if conn.dialect.name == "postgresql":
        return postgresql.insert(target)
    return sqlite.insert(target)


def upsert(conn: Connection, table: Any, rows: list[dict[str, Any]], keys: list[str]) -> None:
    """Insert rows, overwriting every non-key column of rows that already exist."""
    if not rows:
        return
    stmt = insert(conn, table)
    updates = {c: stmt.excluded[c] for c in rows[0] if c not in keys}
    if updates:
        stmt = stmt.on_conflict_do_update(index_elements=keys, set_=updates)
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=keys)
    conn.execute(stmt, rows)


def table_of(model: Any) -> Table:
    """The Core table of a SQLModel class, so expressions type-check as columns."""
    table: Table = model.__table__
    return table


def cols(model: Any) -> ReadOnlyColumnCollection[str, Column[Any]]:
    return table_of(model).c


def _sqlite_times(values: list[Any]) -> list[Any]:
    """The storage format of SQLAlchemy's SQLite DateTime, in UTC as the tables keep it."""
    out: list[Any] = []
    last: Any = None
    text: Any = None
    for v in values:
        # A column often repeats one time object (a batch's "now"): formatted once.
        if v is not last:
            last = v
            if v is None:
                text = None
            else:
                # Positional arguments: keywords cost a third more. A UTC time ends in "+00:00"
                # (cut off), a naive one is UTC already; only other offsets are converted.
                text = v.isoformat(" ", "microseconds")
                if len(text) > 26 and not text.endswith("+00:00"):
                    text = as_utc(v).isoformat(" ", "microseconds")
                text = text[:26]
        out.append(text)
    return out


def _postgres_times(values: list[Any]) -> list[Any]:
    # psycopg sends an aware time with its offset; only a naive one needs its UTC attached.
    return [v if v is None or v.tzinfo is not None else as_utc(v) for v in values]


def _is_datetime(kind: Any) -> bool:
    if isinstance(kind, TypeDecorator):
        kind = kind.impl_instance
    return isinstance(kind, DateTime)


def bulk_write(
    conn: Connection,
    model: Any,
    rows: list[dict[str, Any]],
    *,
    keys: Sequence[str] = (),
    on_conflict: str = "error",
    set_sql: dict[str, str] | None = None,
) -> None:
    """INSERT many rows (dicts with the same keys) straight through the driver; see
    `bulk_write_columns`."""
    if rows:
        columns = {name: [row[name] for row in rows] for name in rows[0]}
        bulk_write_columns(
            conn, model, columns, keys=keys, on_conflict=on_conflict, set_sql=set_sql
        )


def bulk_write_columns(
    conn: Connection,
    model: Any,
    columns: dict[str, list[Any]],
    *,
    keys: Sequence[str] = (),
    on_conflict: str = "error",
    set_sql: dict[str, str] | None = None,
) -> None:
    """INSERT the rows given as one list per column straight through the driver.

    The hot path of ingestion: SQLAlchemy's per-value type processing costs more than the
    insert itself, so JSON and datetimes are converted here once, a column at a time, in the
    same stored form; a type with `checks_writes` (an address column) still checks each
    value. `on_conflict` is "error", "ignore" or "update" on `keys`; an update overwrites the
    non-key columns, or sets them to the SQL in `set_sql` (which may use `excluded.<column>`
    and `<table>.<column>` for the stored value)."""
    names = list(columns)
    if not names or not columns[names[0]]:
        return
    table = table_of(model)
    sqlite_dialect = conn.dialect.name == "sqlite"
    to_times = _sqlite_times if sqlite_dialect else _postgres_times
    converted: list[list[Any]] = []
    for name in names:
        values, kind = columns[name], table.c[name].type
        if isinstance(kind, JSON):
            values = [None if v is None else dumps(v) for v in values]
        elif _is_datetime(kind):
            values = to_times(values)
        elif getattr(kind, "checks_writes", False):
            # A column whose type guards what it holds (profiles.email, profiles.phone): the
            # raw path must not be a way around it.
            checked: Any = kind
            values = [checked.process_bind_param(v, conn.dialect) for v in values]
        converted.append(values)
    into = f"INSERT INTO {table.name} ({', '.join(names)})"
    tail = ""
    if on_conflict != "error":
        target = f" ON CONFLICT ({', '.join(keys)})"
        updates = [n for n in names if n not in keys]
        if on_conflict == "update" and updates:
            exprs = set_sql or {}
            tail = (
                target
                + " DO UPDATE SET "
                + ", ".join(f"{n} = {exprs.get(n, f'excluded.{n}')}" for n in updates)
            )
        else:
            tail = target + " DO NOTHING"
    if sqlite_dialect:
        # In-process executemany is the fastest path SQLite has.
        values_sql = f" VALUES ({', '.join(['?'] * len(names))})"
        conn.exec_driver_sql(into + values_sql + tail, list(zip(*converted, strict=True)))
        return
    # Over the network, one statement per batch: the columns go as arrays and unnest into rows,
    # so there is neither a round trip per row nor a placeholder per value to parse.
    types = [table.c[n].type.compile(dialect=conn.dialect) for n in names]
    arrays = ", ".join(f"%s::{kind}[]" for kind in types)
    conn.exec_driver_sql(f"{into} SELECT * FROM unnest({arrays}){tail}", tuple(converted))
