"""Fixtures of the stage tests: a real SQLite CDP file seeded with synthetic customers and their
consents, an activity environment (no Temporal server) and a CycleRef builder."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from temporalio.testing import ActivityEnvironment

from liftloop.db import make_engine
from liftloop.loop.payloads import CycleRef
from liftloop.loop.spec import CampaignSpec
from tests.stages.helpers import BATCH, CUSTOMERS, OTHER_BATCH, OTHERS, CycleRefBuilder, make_spec
from tools.models.registry import ModelRegistry
from tools.simulation.customers import generate_customers


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """A CDP file with CUSTOMERS profiles of the campaigns' batch and OTHERS of another."""
    eng = make_engine(
        f"sqlite:///{tmp_path / 'cdp.sqlite'}", background_checkpoint=False, wal_autocheckpoint=1000
    )
    generate_customers(eng, CUSTOMERS, batch=BATCH, seed=5)
    generate_customers(eng, OTHERS, batch=OTHER_BATCH, seed=6)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def env() -> ActivityEnvironment:
    return ActivityEnvironment()


@pytest.fixture
def models(tmp_path: Path) -> ModelRegistry:
    """An empty model registry: the nba policy runs with no uplift model."""
    return ModelRegistry(tmp_path / "models")


@pytest.fixture
def cycle_ref() -> CycleRefBuilder:
    """`cycle_ref(spec=None, cycle=1, shards=3, ..., **spec_overrides)`: a cycle's reference as
    the workflow builds it; without a spec, `make_spec(**spec_overrides)`."""
    started = datetime.now(UTC).replace(microsecond=0)

    def build(
        spec: CampaignSpec | None = None,
        *,
        cycle: int = 1,
        shards: int = 3,
        started_at: datetime | None = None,
        window_s: float = 3600.0,
        window_start: datetime | None = None,
        **spec_overrides: Any,
    ) -> CycleRef:
        s = spec or make_spec(**spec_overrides)
        return CycleRef(
            campaign_id=s.id,
            workflow_id=f"campaign-{s.id}",
            cycle=cycle,
            spec=s,
            started_at=started_at or started,
            attribution_window_s=window_s,
            shards=shards,
            window_start=window_start,
        )

    return build
