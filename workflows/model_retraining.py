"""ModelRetrainingWorkflow: check drift against the serving model, retrain when the data moved
(or when asked), and promote a candidate that converged. Deterministic orchestration only;
the data, fitting and registry live in activities. Started by a Temporal schedule
(tools.models.retraining.retraining_schedule)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from liftloop.retraining import RetrainingActivities
    from tools.models.retraining import (
        Candidate,
        DriftCheck,
        PromoteInput,
        RetrainInput,
        RetrainOutput,
    )

_FIT = workflow.ActivityConfig(
    start_to_close_timeout=timedelta(minutes=30),
    retry_policy=RetryPolicy(
        maximum_attempts=3,
        maximum_interval=timedelta(minutes=1),
        non_retryable_error_types=["ModelInputError", "ModelRefused"],
    ),
)


@workflow.defn(name="ModelRetrainingWorkflow")
class ModelRetrainingWorkflow:
    @workflow.run
    async def run(self, inp: RetrainInput) -> RetrainOutput:
        drift: DriftCheck = await workflow.execute_activity_method(
            RetrainingActivities.check_drift, inp, **_FIT
        )
        if not (drift.drifted or inp.force):
            return RetrainOutput(
                name=inp.name,
                drift=drift,
                serving_version=drift.serving_version,
                reason="no drift above the threshold",
            )
        candidate: Candidate = await workflow.execute_activity_method(
            RetrainingActivities.train_candidate, inp, **_FIT
        )
        if not candidate.converged:
            return RetrainOutput(
                name=inp.name,
                drift=drift,
                candidate=candidate,
                serving_version=drift.serving_version,
                reason="candidate did not converge",
            )
        if not inp.auto_promote:
            return RetrainOutput(
                name=inp.name,
                drift=drift,
                candidate=candidate,
                serving_version=drift.serving_version,
                reason="candidate registered for review",
            )
        serving: str = await workflow.execute_activity_method(
            RetrainingActivities.promote,
            PromoteInput(name=inp.name, version=candidate.version),
            **_FIT,
        )
        return RetrainOutput(
            name=inp.name,
            drift=drift,
            candidate=candidate,
            promoted=True,
            serving_version=serving,
            reason="no model was serving"
            if drift.serving_version is None
            else ("drift above the threshold" if drift.drifted else "forced"),
        )
