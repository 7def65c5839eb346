"""SQLite's write-ahead log checkpointed on a thread of its own, not in a writer's commit.

By default SQLite checkpoints inside the commit that takes the log past 1,000 pages: that
writer copies the pages back into the database file and syncs both files while its caller
waits, a fifth of ingestion time. Here a thread with its own connection runs a PASSIVE
checkpoint after every commit of the engine instead. A PASSIVE checkpoint never blocks a reader
or a writer, and the log is synced sooner than with SQLite's interval, so a power cut can take
back less. The writers keep their own autocheckpoint at a larger interval: the bound on the
log if the thread falls behind.
"""

from __future__ import annotations

import atexit
import sqlite3
import threading
import weakref
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

# While readers keep frames from being copied back, the thread retries after this long.
RETRY_S = 0.05
_running: weakref.WeakSet[WalCheckpointer] = weakref.WeakSet()


class WalCheckpointer:
    """Checkpoints one database file whenever `poke` says a commit happened."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="sqlite-wal-checkpoint", daemon=True)
        self._thread.start()
        _running.add(self)

    def poke(self) -> None:
        self._wake.set()

    def stop(self, wait: float = 0.0) -> None:
        self._stopping = True
        self._wake.set()
        if wait and threading.current_thread() is not self._thread:
            self._thread.join(wait)

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        pending = False
        try:
            while True:
                self._wake.wait(RETRY_S if pending else None)
                if self._stopping:
                    return
                self._wake.clear()
                if conn is None:
                    # Opened at the first commit, when the file exists and is in WAL mode.
                    conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                    conn.execute("PRAGMA synchronous=NORMAL")
                busy, log, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                # Busy: another connection is checkpointing. Frames left: a reader still needs
                # them, or a commit landed meanwhile. Either way, try again shortly.
                pending = bool(busy) or log > done
        except sqlite3.Error:
            # The file went away (a test's temporary directory) or is unreadable: the writers'
            # own autocheckpoint still bounds the log.
            return
        finally:
            if conn is not None:
                conn.close()


def attach(engine: Engine, path: str) -> WalCheckpointer:
    """Start a checkpointer for `engine`'s file, poked when a connection that committed goes
    back to the pool (the commit event itself fires before the commit is done)."""
    checkpointer = WalCheckpointer(path)

    def committed(conn: Any) -> None:
        conn.info["wal_committed"] = True

    def checked_in(_dbapi_conn: Any, record: Any) -> None:
        if record.info.pop("wal_committed", False):
            checkpointer.poke()

    event.listen(engine, "commit", committed)
    event.listen(engine.pool, "checkin", checked_in)
    # The thread lives as long as the engine (dispose() only empties the pool).
    weakref.finalize(engine, checkpointer.stop)
    return checkpointer


@atexit.register
def _stop_all() -> None:
    for checkpointer in list(_running):
        checkpointer.stop(wait=5.0)
