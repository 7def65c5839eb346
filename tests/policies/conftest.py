"""Fixtures for the policies tests: bundled policies and an in-memory span exporter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from policies import Policy, PolicyStore

DATA = Path(__file__).parent / "data"
_EXPORTER = InMemorySpanExporter()


def _install_exporter() -> None:
    # The global provider can be set only once per process; reuse an SDK provider set elsewhere.
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))


_install_exporter()


@pytest.fixture(scope="session")
def store() -> PolicyStore:
    return PolicyStore.bundled()


@pytest.fixture(scope="session")
def de_policy(store: PolicyStore) -> Policy:
    return store.get("DE")


@pytest.fixture(scope="session")
def us_policy(store: PolicyStore) -> Policy:
    return store.get("US")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


@pytest.fixture(scope="session")
def policy_text() -> str:
    return (Path(__file__).parents[2] / "policies" / "files" / "default_de.yaml").read_text("utf-8")


@pytest.fixture(scope="session")
def marketing_lines() -> list[str]:
    text = (DATA / "marketing_copy.txt").read_text("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
