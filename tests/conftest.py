"""Fixtures shared by every test package."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import datasets

# Nothing may reach the network while tests run.
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
os.environ.setdefault("ALLOW_MODEL_REQUESTS", "false")
# A test that reads the process's settings without choosing a data directory (a CLI command
# run in-process, say) writes into this one, never into the checkout's own `.liftloop`.
if "LIFTLOOP_DATA_DIR" not in os.environ:
    _DATA_DIR = tempfile.mkdtemp(prefix="liftloop-tests-")
    os.environ["LIFTLOOP_DATA_DIR"] = _DATA_DIR
    atexit.register(shutil.rmtree, _DATA_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def data_file() -> Callable[[str], Path]:
    """Looks up a bundled public data set (tests/data/) by name and returns a plain file.

    A missing file is a FileNotFoundError, never a skip: the data sets travel with the project."""
    return datasets.data_file
