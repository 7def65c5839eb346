"""Payloads of the model retraining workflow (only references and small summaries cross
Temporal) and the Temporal schedule that starts it."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from temporalio.client import (
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
)


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True)


class RetrainInput(_Payload):
    name: str = "clv"
    # A file name under the worker's data folder, never the data itself.
    transactions: str
    format: Literal["cdnow", "csv"] = "cdnow"
    calibration_end: str | None = None
    psi_threshold: float = Field(default=0.25, gt=0.0)
    force: bool = False
    auto_promote: bool = True


class DriftCheck(_Payload):
    serving_version: str | None
    psi: dict[str, float] = Field(default_factory=dict)
    drifted: bool


class Candidate(_Payload):
    version: str
    converged: bool
    log_likelihood: float
    customers: int


class PromoteInput(_Payload):
    name: str
    version: str


class RetrainOutput(_Payload):
    name: str
    drift: DriftCheck
    candidate: Candidate | None = None
    promoted: bool = False
    serving_version: str | None = None
    reason: str


def retraining_schedule(
    inp: RetrainInput, *, task_queue: str, every: timedelta = timedelta(days=7)
) -> Schedule:
    """Pass to `client.create_schedule(schedule_id, retraining_schedule(...))`; a run still
    going when the next is due is skipped, so two candidates never race for promotion."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            "ModelRetrainingWorkflow", inp, id=f"retrain-{inp.name}", task_queue=task_queue
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
