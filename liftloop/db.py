"""Engine creation: SQLite by default (WAL), PostgreSQL with the same code."""

from __future__ import annotations

from functools import lru_cache, partial
from pathlib import Path
from typing import Any

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlmodel import SQLModel, create_engine

import approvals.slack_tables  # noqa: F401  (registers the Slack tables)
import tools.audit.tables
import tools.cdp.tables
import tools.content.ledger
import tools.content.releases  # noqa: F401  (registers the prompt evaluations)
from liftloop import wal_checkpoint
from liftloop.loop import tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from liftloop.settings import get_settings


def _sqlite_pragmas(wal_autocheckpoint: int, dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the API read while shards write; NORMAL is durable at checkpoints, enough for a CDP.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=60000")
    # 32 MiB of page cache (the default is 2 MiB): ingestion updates several indexes per event.
    cur.execute("PRAGMA cache_size=-32768")
    cur.execute("PRAGMA foreign_keys=OFF")
    cur.execute(f"PRAGMA wal_autocheckpoint={int(wal_autocheckpoint)}")
    cur.close()


def make_engine(
    url: str, *, background_checkpoint: bool = True, wal_autocheckpoint: int | None = None
) -> Engine:
    """SQLite only: a file database's log is checkpointed by a thread of its own
    (`liftloop.wal_checkpoint`) unless `background_checkpoint` is off; `wal_autocheckpoint` is
    the number of pages at which a writer checkpoints itself (None takes the setting)."""
    if url.startswith("sqlite"):
        path = make_url(url).database or ""
        on_disk = path not in ("", ":memory:")
        if on_disk:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60})
        pages = wal_autocheckpoint or get_settings().sqlite_wal_autocheckpoint
        event.listen(engine, "connect", partial(_sqlite_pragmas, pages))
        if on_disk and background_checkpoint:
            wal_checkpoint.attach(engine, path)
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=8)
    SQLModel.metadata.create_all(engine)
    _add_new_columns(engine)
    return engine


def _add_new_columns(engine: Engine) -> None:
    """Columns added to a table after a database was created are nullable; add them in place so
    an existing data directory keeps working after an upgrade."""
    existing = inspect(engine)
    with engine.begin() as conn:
        for table in SQLModel.metadata.sorted_tables:
            if not existing.has_table(table.name):
                continue
            present = {c["name"] for c in existing.get_columns(table.name)}
            for column in table.columns:
                if column.name not in present and column.nullable:
                    kind = column.type.compile(dialect=engine.dialect)
                    conn.execute(
                        text(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}')
                    )


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    return make_engine(url)
