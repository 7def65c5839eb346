"""A LangGraph checkpointer that keeps each thread's checkpoints in a SQLite file.

langgraph's own SQLite saver is a separate package that is not a dependency here, so this one
extends the in-memory saver: reads stay in memory, and every change to a thread is written to the
file as one row, which is enough for a planner that pauses at an approval and resumes in another
process. The rows are pickles of the saver's already-serialised entries, so the file must stay
private to liftloop (it lives in the data directory).
"""

from __future__ import annotations

import pickle
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata
from langgraph.checkpoint.memory import InMemorySaver


class SQLiteFileSaver(InMemorySaver):
    def __init__(self, path: Path) -> None:
        super().__init__()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False)
        # LangGraph saves checkpoints and pending writes from a background thread.
        self._lock = threading.RLock()
        with self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS planner_threads"
                " (thread_id TEXT PRIMARY KEY, state BLOB NOT NULL)"
            )
        for thread_id, blob in self._db.execute("SELECT thread_id, state FROM planner_threads"):
            storage, writes, blobs = pickle.loads(blob)
            self.storage[thread_id].update(storage)
            self.writes.update(writes)
            self.blobs.update(blobs)

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
        self._db.close()
