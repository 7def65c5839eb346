"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Real public data sets live beside the checkout, never inside it (see shared/data/README.md).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Nothing may reach the network while tests run.
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
os.environ.setdefault("ALLOW_MODEL_REQUESTS", "false")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of public data sets; tests that need it skip cleanly when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA.name}/ beside the checkout")
    return SHARED_DATA
