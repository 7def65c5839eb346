"""Fixtures shared by every test package."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests import datasets

if TYPE_CHECKING:  # imported lazily: only the tests that use the stub pay for pydantic-ai
    from tests.openai_stub import OpenAIStub

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


@pytest.fixture()
def openai_stub() -> Iterator[OpenAIStub]:
    """A started chat-completions server on 127.0.0.1 (tests/openai_stub.py); model requests
    are allowed for this test only, since every other test must stay off the network."""
    from pydantic_ai.models import override_allow_model_requests

    from tests.openai_stub import OpenAIStub

    with OpenAIStub() as stub, override_allow_model_requests(True):
        yield stub
