"""A JSON Lines file outbox: one delivered message per line, each id at most once, also when
several workers append to the same file.

A file may be rewritten while senders run (`rewrite_records`, for a person's erasure): the new
text is written to a temporary file and renamed over the old one under the same lock the
senders take. A sender that then holds the lock on the replaced file notices that the path
names another file, and opens it again instead of appending to the replaced one.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from connectors.ports import OutboundMessage, SendOutcome

# The record to write instead of a line's record, or None to keep the line as it is.
Edit = Callable[[dict[str, Any]], dict[str, Any] | None]


def _same_inode(a: IO[bytes], b: IO[bytes]) -> bool:
    sa, sb = os.fstat(a.fileno()), os.fstat(b.fileno())
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _same_file(fh: IO[bytes], path: Path) -> bool:
    try:
        here, there = os.fstat(fh.fileno()), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


@contextmanager
def _locked(path: Path, mode: str) -> Iterator[IO[bytes]]:
    """`path` opened in `mode` under its exclusive lock, the file the path names once held
    (a rewrite may have renamed another over it while this waited for the lock)."""
    while True:
        fh = path.open(mode)
        try:
            fcntl.flock(fh, fcntl.LOCK_EX)
            if _same_file(fh, path):
                try:
                    yield fh
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
                return
        finally:
            fh.close()


class JsonlFileSender:
    name = "jsonl"

    def __init__(self, path: Path):
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._ids: set[str] = set()
        self._read_upto = 0
        # The file `_read_upto` counts bytes of, held open: while it is, no other file can
        # have its inode, so a file renamed over it (a rewrite) is told apart for certain.
        self._reader: IO[bytes] | None = None
        self._lock = threading.Lock()

    def _catch_up(self, fh: IO[bytes]) -> None:
        # Another process may have appended since we last looked: read only the new tail. A
        # rewritten file is read again from its start (it holds the same ids).
        if self._reader is None or not _same_inode(self._reader, fh):
            if self._reader is not None:
                self._reader.close()
            self._reader = self.path.open("rb")  # under the lock: the file `fh` is
            self._read_upto = 0
            self._ids = set()
        self._reader.seek(self._read_upto)
        for line in self._reader:
            if line.endswith(b"\n"):
                self._ids.add(json.loads(line)["id"])
                self._read_upto += len(line)

    def close(self) -> None:
        with self._lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def send(self, messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
        outcomes: list[SendOutcome] = []
        with self._lock, _locked(self.path, "ab") as fh:
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
                outcomes.append(SendOutcome(message_id=msg.id, status="sent", provider_id=msg.id))
            data = "".join(lines).encode()
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
            self._read_upto += len(data)
        return outcomes


def rewrite_records(path: Path, edit: Edit) -> int:
    """Replace the records of `path` that `edit` changes, atomically, under the senders' lock;
    returns how many lines changed. Every other line, and a last line without its newline (a
    writer that died mid-line), stays byte for byte. Nothing is written when nothing changes."""
    if not path.is_file():
        return 0
    with _locked(path, "rb") as fh:
        out: list[bytes] = []
        changed = 0
        for line in fh.read().splitlines(keepends=True):
            record: Any = None
            if line.endswith(b"\n"):
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
            new = edit(record) if isinstance(record, dict) else None
            if new is None:
                out.append(line)
            else:
                out.append(json.dumps(new, separators=(",", ":")).encode() + b"\n")
                changed += 1
        if changed:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as tf:
                    tf.write(b"".join(out))
                    tf.flush()
                    os.fsync(tf.fileno())
                os.chmod(tmp, os.stat(path).st_mode & 0o7777)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)  # the rename itself survives a crash
            finally:
                os.close(dir_fd)
        return changed


def read_records(path: Path, keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """The complete records of `path` that `keep` accepts, in file order."""
    if not path.is_file():
        return []
    found: list[dict[str, Any]] = []
    with path.open("rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and keep(record):
                found.append(record)
    return found
