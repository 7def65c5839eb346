from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from liftloop.db import make_engine
from liftloop.retraining import RetrainingActivities
from tests.audit_support import audit_for
from tools.audit import timeline
from tools.models.registry import ModelRegistry
from tools.models.retraining import RetrainInput, RetrainOutput, retraining_schedule
from workflows.model_retraining import ModelRetrainingWorkflow

TEST_SERVER = Path(sys.executable).parent / "temporal-test-server"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    if not TEST_SERVER.exists():
        raise FileNotFoundError(f"{TEST_SERVER} missing: install the dev dependencies (uv sync)")
    environment = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=str(TEST_SERVER)
    )
    yield environment
    await environment.shutdown()


async def _run(client: Client, acts: RetrainingActivities, inp: RetrainInput) -> RetrainOutput:
    queue = f"models-{uuid.uuid4().hex[:8]}"
    with ThreadPoolExecutor(max_workers=2) as pool:
        async with Worker(
            client,
            task_queue=queue,
            workflows=[ModelRetrainingWorkflow],
            activities=[acts.check_drift, acts.train_candidate, acts.promote],
            activity_executor=pool,
        ):
            return await client.execute_workflow(
                ModelRetrainingWorkflow.run,
                inp,
                id=f"retrain-{uuid.uuid4().hex[:8]}",
                task_queue=queue,
                result_type=RetrainOutput,
            )


@pytest.mark.asyncio(loop_scope="session")
async def test_retrains_only_when_needed(
    env: WorkflowEnvironment, data_file: Callable[[str], Path], tmp_path: Path
) -> None:
    registry = ModelRegistry(tmp_path)
    # The activity resolves the input's relative file name inside this data root.
    audit = audit_for(make_engine(f"sqlite:///{tmp_path / 'cdp.sqlite'}"))
    acts = RetrainingActivities(registry, data_file("lifetimes_CDNOW_sample.txt").parent, audit)
    inp = RetrainInput(transactions="lifetimes_CDNOW_sample.txt")

    first = await _run(env.client, acts, inp)
    assert first.promoted and first.serving_version == "v1"
    promotions = [e for e in timeline(audit.engine) if e.kind == "model.promote"]
    assert [e.subject for e in promotions] == ["clv:v1"]
    assert first.reason == "no model was serving"
    assert first.candidate is not None and first.candidate.customers == 2357
    assert round(first.candidate.log_likelihood, 1) == -9582.4

    same = await _run(env.client, acts, inp)
    assert not same.drift.drifted and same.candidate is None
    assert same.drift.psi == {"purchase_rate": 0.0, "repeat_value": 0.0}
    assert same.serving_version == "v1"

    later = inp.model_copy(update={"calibration_end": "1998-03-31", "psi_threshold": 1e-6})
    moved = await _run(env.client, acts, later)
    assert moved.drift.drifted and moved.promoted and moved.serving_version == "v2"
    assert registry.serving("clv")[0].training_end == "1998-03-31"

    review = await _run(
        env.client, acts, inp.model_copy(update={"force": True, "auto_promote": False})
    )
    assert review.candidate is not None and review.candidate.version == "v3"
    assert not review.promoted and registry.serving("clv")[0].version == "v2"


def test_schedule_starts_the_workflow_weekly_without_overlap() -> None:
    schedule = retraining_schedule(RetrainInput(transactions="t.txt"), task_queue="q")
    assert schedule.action.workflow == "ModelRetrainingWorkflow"  # type: ignore[attr-defined]
    assert schedule.spec.intervals[0].every.days == 7
