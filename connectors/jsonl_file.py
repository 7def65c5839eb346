"""A JSON Lines file outbox: one delivered message per line, each id at most once, also when
several workers append to the same file."""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from connectors.ports import OutboundMessage, SendOutcome


class JsonlFileSender:
    name = "jsonl"

    def __init__(self, path: Path):
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._ids: set[str] = set()
        self._read_upto = 0
        self._lock = threading.Lock()

    def _catch_up(self, fh: object) -> None:
        # Another process may have appended since we last looked: read only the new tail.
        with self.path.open("rb") as rf:
            rf.seek(self._read_upto)
            for line in rf:
                if line.endswith(b"\n"):
                    self._ids.add(json.loads(line)["id"])
                    self._read_upto += len(line)

    def send(self, messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
        outcomes: list[SendOutcome] = []
        with self._lock, self.path.open("ab") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                self._catch_up(fh)
                lines = []
                for msg in messages:
                    if msg.id in self._ids:
                        outcomes.append(
                            SendOutcome(message_id=msg.id, status="duplicate", provider_id=msg.id)
                        )
                        continue
                    self._ids.add(msg.id)
                    lines.append(json.dumps(msg.model_dump(), separators=(",", ":")) + "\n")
                    outcomes.append(
                        SendOutcome(message_id=msg.id, status="sent", provider_id=msg.id)
                    )
                data = "".join(lines).encode()
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
                self._read_upto += len(data)
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return outcomes
