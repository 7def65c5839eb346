"""A LangGraph checkpointer that keeps each thread's checkpoints in a SQLite file.

langgraph's own SQLite saver is a separate package that is not a dependency here, so this one
extends the in-memory saver: every change to a thread (a checkpoint, a task's pending writes) is
written to the file as one row in its own committed transaction before the graph goes on, and a
thread is read back from the file whenever a run or a status asks for it. So a crash loses no
completed step, and a plan started by one process (the CLI) is seen and answered by another
(the API, a later command).

The rows are pickles of the saver's already-serialised entries, so the file must stay private
to liftloop (it lives in the data directory, created with the CLI's private umask).
"""

from __future__ import annotations

import pickle
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
)
from langgraph.checkpoint.memory import InMemorySaver


class SQLiteFileSaver(InMemorySaver):
    def __init__(self, path: Path) -> None:
        super().__init__()
        path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit off (the `with self._db` blocks commit); one connection, guarded by the
        # lock: LangGraph saves pending writes from a background thread.
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=30)
        self._lock = threading.RLock()
        # WAL lets a reader in another process see the last committed row while one writes;
        # synchronous=FULL makes each commit durable when it returns, not when the OS flushes.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        with self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS planner_threads"
                " (thread_id TEXT PRIMARY KEY, state BLOB NOT NULL)"
            )

    def _reload(self, thread_id: str) -> None:
        """The thread as the file has it, over whatever this process held of it."""
        with self._lock:
            row = self._db.execute(
                "SELECT state FROM planner_threads WHERE thread_id = ?", (thread_id,)
            ).fetchone()
            self._forget(thread_id)
            if row is None:
                return
            storage, writes, blobs = pickle.loads(row[0])
            self.storage[thread_id].update(storage)
            self.writes.update(writes)
            self.blobs.update(blobs)

    def _forget(self, thread_id: str) -> None:
        self.storage.pop(thread_id, None)
        for write in [k for k in self.writes if k[0] == thread_id]:
            del self.writes[write]
        for blob in [k for k in self.blobs if k[0] == thread_id]:
            del self.blobs[blob]

    def _persist(self, thread_id: str) -> None:
        with self._lock, self._db:
            state = (
                dict(self.storage.get(thread_id, {})),
                {k: v for k, v in self.writes.items() if k[0] == thread_id},
                {k: v for k, v in self.blobs.items() if k[0] == thread_id},
            )
            self._db.execute(
                "INSERT OR REPLACE INTO planner_threads (thread_id, state) VALUES (?, ?)",
                (thread_id, pickle.dumps(state)),
            )

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        # A run starts by reading its thread: this is where another process's steps come in.
        with self._lock:
            self._reload(config["configurable"]["thread_id"])
            return super().get_tuple(config)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        with self._lock:
            if config is not None:
                self._reload(config["configurable"]["thread_id"])
            found = list(super().list(config, filter=filter, before=before, limit=limit))
        yield from found

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        # Reads the shared dicts that another thread's reload rewrites: under the same lock.
        with self._lock:
            return super().get_delta_channel_history(config=config, channels=channels)

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        with self._lock:
            result = super().put(config, checkpoint, metadata, new_versions)
            self._persist(config["configurable"]["thread_id"])
        return result

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        with self._lock:
            super().put_writes(config, writes, task_id, task_path)
            self._persist(config["configurable"]["thread_id"])

    def delete_thread(self, thread_id: str) -> None:
        with self._lock, self._db:
            super().delete_thread(thread_id)
            self._db.execute("DELETE FROM planner_threads WHERE thread_id = ?", (thread_id,))

    def close(self) -> None:
        with self._lock:
            self._db.close()
