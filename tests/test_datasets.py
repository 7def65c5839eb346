"""The bundled data sets are the originals: each file's digest matches tests/data/README.md, and
every file in the folder is listed there."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.datasets import DATA_DIR

DIGESTS = dict(
    re.findall(r"^\| `([^`]+)` \| `([0-9a-f]{64})` \|$", (DATA_DIR / "README.md").read_text(), re.M)
)


def test_every_bundled_file_has_a_digest() -> None:
    stored = {p.name.removesuffix(".gz") for p in DATA_DIR.iterdir() if p.name != "README.md"}
    assert stored == set(DIGESTS)


@pytest.mark.parametrize("name", sorted(DIGESTS))
def test_bundled_file_is_the_original(name: str, data_file: Callable[[str], Path]) -> None:
    assert hashlib.sha256(data_file(name).read_bytes()).hexdigest() == DIGESTS[name]
