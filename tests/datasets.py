"""Where the bundled public data sets are: one lookup for tests and benchmarks alike.

The files live in tests/data/ (tests/data/README.md gives each one's source and licence).
Large ones are stored gzip-compressed as ``<name>.gz``; ``data_file`` hands back a plain file
either way. A ``.gz`` is decompressed once per process into a private temporary directory that
is removed at exit, so no stale or foreign copy in a shared temp folder is ever read.
"""

from __future__ import annotations

import atexit
import functools
import gzip
import shutil
import tempfile
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"


def data_file(name: str, directory: Path = DATA_DIR) -> Path:
    """The path of data set `name` (e.g. "obd_random_all.csv") as a plain, readable file.

    Raises FileNotFoundError when neither `name` nor `name.gz` is in `directory`."""
    plain = directory / name
    if plain.is_file():
        return plain
    packed = directory / f"{name}.gz"
    if not packed.is_file():
        raise FileNotFoundError(
            f"data file {name!r} (or {name}.gz) not found in {directory}; "
            "tests/data/README.md lists the data sets that travel with the project"
        )
    return _decompressed(packed.resolve())


@functools.cache
def _decompressed(packed: Path) -> Path:
    # A directory of its own per file, holding it under its original name, so the parent of the
    # returned path can serve as a data root just like DATA_DIR.
    target = Path(tempfile.mkdtemp(dir=_cache_dir())) / packed.stem
    with gzip.open(packed) as source, target.open("wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)
    return target


@functools.cache
def _cache_dir() -> str:
    path = tempfile.mkdtemp(prefix="liftloop-data-")  # private to this user (mode 0700)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
