"""What ingestion may read: regular files inside the folders (or the files) it was given.

Every directory and file is opened relative to its parent's file descriptor with `O_NOFOLLOW`,
so nothing is read through a symbolic link at any step — not a linked file, not a linked
directory, not a link planted while the walk runs — and a walk can never leave the folder it
started in. Each refused path is reported with a named error (`tools.rag.errors`), never
skipped silently and never followed. Names starting with a dot (files and folders) are skipped.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tools.rag.errors import (
    MissingPathError,
    NotRegularFileError,
    OutsideRootError,
    PathRefusedError,
    SymlinkRefusedError,
)

SIDECAR_SUFFIX = ".meta.yaml"
_NOFOLLOW = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
# A FIFO swapped in after the check must not block the read; the fstat then refuses it.
_FILE_FLAGS = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0)
_DIR_FLAGS = os.O_RDONLY | _NOFOLLOW | os.O_DIRECTORY


@dataclass(frozen=True)
class SourceFile:
    """One document's bytes and those of its `<name>.meta.yaml` sidecar, if it has one.

    `raw` is None for a file whose name the caller does not read (an unsupported type): it is
    still reported, but its content is never loaded.
    """

    path: Path
    raw: bytes | None
    sidecar: bytes | None = None


Wanted = Callable[[str], bool]


def _refusal_for(path: Path, exc: OSError) -> PathRefusedError:
    if exc.errno in (errno.ELOOP, errno.EMLINK):
        return SymlinkRefusedError(path, "is a symbolic link; ingestion never follows links")
    if exc.errno == errno.ENOENT:
        return MissingPathError(path, "no such file")
    if exc.errno == errno.ENOTDIR:
        return NotRegularFileError(path, "changed while it was read; not ingested")
    return PathRefusedError(path, f"cannot be read ({exc.strerror})")


def _classify(path: Path, mode: int) -> PathRefusedError | None:
    if stat.S_ISLNK(mode):
        return SymlinkRefusedError(path, "is a symbolic link; ingestion never follows links")
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return NotRegularFileError(path, "is not a regular file (device, FIFO or socket)")
    return None


def _read_at(dir_fd: int, name: str, shown: Path) -> bytes:
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        raise _refusal_for(shown, exc) from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFileError(shown, "is not a regular file (device, FIFO or socket)")
        chunks = []
        while block := os.read(fd, 1 << 20):
            chunks.append(block)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _source_at(dir_fd: int, name: str, shown: Path, wanted: Wanted) -> SourceFile:
    if not wanted(name):
        return SourceFile(shown, None)
    raw = _read_at(dir_fd, name, shown)
    sidecar_name = name + SIDECAR_SUFFIX
    try:
        mode = os.stat(sidecar_name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return SourceFile(shown, raw)
    sidecar_path = shown.with_name(sidecar_name)
    refused = _classify(sidecar_path, mode)
    if refused is not None or stat.S_ISDIR(mode):
        raise refused or NotRegularFileError(sidecar_path, "is a directory, not a sidecar file")
    return SourceFile(shown, raw, _read_at(dir_fd, sidecar_name, sidecar_path))


def _walk(dir_fd: int, shown: Path, wanted: Wanted) -> Iterator[SourceFile | PathRefusedError]:
    try:
        names = sorted(os.listdir(dir_fd))
    except OSError as exc:
        yield _refusal_for(shown, exc)
        return
    for name in names:
        if name.startswith(".") or name.endswith(SIDECAR_SUFFIX):
            continue
        child = shown / name
        try:
            mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
        except OSError as exc:
            yield _refusal_for(child, exc)
            continue
        refused = _classify(child, mode)
        if refused is not None:
            yield refused
        elif stat.S_ISDIR(mode):
            try:
                sub = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            except OSError as exc:
                yield _refusal_for(child, exc)
                continue
            try:
                yield from _walk(sub, child, wanted)
            finally:
                os.close(sub)
        else:
            try:
                yield _source_at(dir_fd, name, child, wanted)
            except PathRefusedError as exc:
                yield exc


def _open_dir(path: Path) -> int:
    try:
        return os.open(path, _DIR_FLAGS)
    except OSError as exc:
        raise _refusal_for(path, exc) from exc


def _from_argument(
    path: Path, root: Path | None, wanted: Wanted
) -> Iterator[SourceFile | PathRefusedError]:
    # The folder named by the caller may sit below linked folders (e.g. /tmp on macOS); the
    # path itself must not be a link, and with a root it must resolve inside it.
    try:
        mode = os.lstat(path).st_mode
    except OSError as exc:
        yield _refusal_for(path, exc)
        return
    refused = _classify(path, mode)
    if refused is not None:
        yield refused
        return
    if root is not None and not path.resolve().is_relative_to(root):
        yield OutsideRootError(path, f"resolves outside the folder {root}")
        return
    try:
        if stat.S_ISDIR(mode):
            fd = _open_dir(path)
            try:
                yield from _walk(fd, path, wanted)
            finally:
                os.close(fd)
            return
        parent = _open_dir(path.parent)
        try:
            yield _source_at(parent, path.name, path, wanted)
        finally:
            os.close(parent)
    except PathRefusedError as exc:
        yield exc


def _everything(name: str) -> bool:
    return True


def iter_sources(
    paths: Iterable[Path], *, root: Path | None = None, wanted: Wanted = _everything
) -> Iterator[SourceFile | PathRefusedError]:
    """Every document under `paths`, or the refusal of a path that may not be read.

    With `root`, every path must resolve inside it (so `root/../secret.md` is refused);
    without it each directory given is its own root and each file its own document. Files
    whose name `wanted` rejects are yielded unread (`raw` is None).
    """
    base = root.resolve() if root is not None else None
    for path in paths:
        yield from _from_argument(Path(path), base, wanted)
