"""SQLite storage: the write-ahead log is checkpointed by a thread, not by the writers, and the
CDP's keyed tables are stored without a rowid."""

from __future__ import annotations

import gc
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from liftloop.db import make_engine
from tools.cdp.tables import ensure_cdp_tables

THREAD = "sqlite-wal-checkpoint"


def rows_in_database_file(path: Path, tmp: Path) -> int:
    """Rows of `t` in the database file alone: what has been checkpointed out of the log."""
    copy = tmp / "copy.sqlite"
    shutil.copyfile(path, copy)  # without the -wal file beside it
    conn = sqlite3.connect(copy)
    try:
        found = conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 't'").fetchone()[0]
        return int(conn.execute("SELECT count(*) FROM t").fetchone()[0]) if found else 0
    except sqlite3.DatabaseError:
        return -1  # copied in the middle of a checkpoint
    finally:
        conn.close()


def eventually(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def write_rows(engine: object, start: int, n: int) -> None:
    with engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(text("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)"))
        conn.execute(
            text("INSERT INTO t (id, v) VALUES (:id, :v)"),
            [{"id": i, "v": "x" * 200} for i in range(start, start + n)],
        )


@pytest.mark.parametrize("background", [True, False])
def test_commits_reach_the_database_file_only_with_the_checkpoint_thread(
    tmp_path: Path, background: bool
) -> None:
    db = tmp_path / "cdp.sqlite"
    # Writers would checkpoint only at 100,000 pages: whatever reaches the file is the thread's.
    engine = make_engine(
        f"sqlite:///{db}", background_checkpoint=background, wal_autocheckpoint=100_000
    )
    for batch in range(5):
        write_rows(engine, batch * 100, 100)
    if background:
        assert eventually(lambda: rows_in_database_file(db, tmp_path) == 500)
    else:
        time.sleep(0.5)
        assert rows_in_database_file(db, tmp_path) == 0
    with engine.connect() as conn:  # readers see every commit either way
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 500
    engine.dispose()


def test_a_reader_holding_old_frames_delays_the_checkpoint_but_does_not_lose_it(
    tmp_path: Path,
) -> None:
    db = tmp_path / "cdp.sqlite"
    engine = make_engine(f"sqlite:///{db}", wal_autocheckpoint=100_000)
    write_rows(engine, 0, 100)
    assert eventually(lambda: rows_in_database_file(db, tmp_path) == 100)
    reader = sqlite3.connect(db, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM t").fetchone()[0] == 100  # holds its snapshot
    write_rows(engine, 100, 100)
    time.sleep(0.3)
    # The new frames cannot be copied over pages the reader may still need from the file.
    assert rows_in_database_file(db, tmp_path) == 100
    reader.execute("COMMIT")
    reader.close()
    # No further commit pokes the thread: its own retry finishes the checkpoint.
    assert eventually(lambda: rows_in_database_file(db, tmp_path) == 200)
    engine.dispose()


def checkpoint_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == THREAD}


def test_the_thread_ends_with_its_engine(tmp_path: Path) -> None:
    before = checkpoint_threads()
    engine = make_engine(f"sqlite:///{tmp_path / 'cdp.sqlite'}")
    write_rows(engine, 0, 10)
    (thread,) = checkpoint_threads() - before
    engine.dispose()
    assert thread.is_alive()  # dispose() only empties the pool; the engine may be used again
    del engine
    gc.collect()
    assert eventually(lambda: not thread.is_alive())


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_no_thread_for_an_in_memory_database(url: str) -> None:
    before = checkpoint_threads()
    engine = make_engine(url)
    write_rows(engine, 0, 10)
    assert checkpoint_threads() - before == set()


def test_keyed_cdp_tables_have_no_rowid(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'cdp.sqlite'}")
    ensure_cdp_tables(engine)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type='table'"))
        ddl = {name: sql for name, sql in rows}
    for table in ("cdp_engagement", "cdp_features", "cdp_identities", "cdp_trait_state"):
        assert ddl[table].rstrip().endswith("WITHOUT ROWID"), table
    assert not ddl["events"].rstrip().endswith("WITHOUT ROWID")
    engine.dispose()
