"""RetentionWorkflow: one run of the retention job (liftloop/retention.py), started by the
schedule the worker keeps."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from liftloop.retention import RetentionActivities, RetentionReport


@workflow.defn(name="RetentionWorkflow")
class RetentionWorkflow:
    @workflow.run
    async def run(self) -> RetentionReport:
        return await workflow.execute_activity_method(
            RetentionActivities.expire,
            start_to_close_timeout=timedelta(minutes=30),
            retry_policy=RetryPolicy(maximum_attempts=5, maximum_interval=timedelta(minutes=5)),
        )
