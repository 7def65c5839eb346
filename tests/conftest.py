"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import datasets

# Nothing may reach the network while tests run.
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
os.environ.setdefault("ALLOW_MODEL_REQUESTS", "false")


@pytest.fixture(scope="session")
def data_file() -> Callable[[str], Path]:
    """Looks up a bundled public data set (tests/data/) by name and returns a plain file.

    A missing file is a FileNotFoundError, never a skip: the data sets travel with the project."""
    return datasets.data_file
