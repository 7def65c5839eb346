"""Campaign operations shared by the CLI and the API: start, status, list and control.

- `start_campaign` refuses, as a SpecError, an input the worker could not read back (it encodes
  and decodes it with the client's converter first) or one too large for Temporal.
- `campaign_status` and `list_campaigns` tell a failed campaign (outcome `failed`, with the
  reason Temporal recorded) from one that runs; an ended campaign is read from Temporal's record,
  so no worker is needed for it. A running campaign whose workflow task keeps failing is shown
  as running with the reason it is stuck.
- `control_campaign(..., "stop")` always stops: it signals, and when the signal cannot take
  effect (the workflow task keeps failing, or the campaign waits on an activity that keeps
  failing) it terminates the workflow with the reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from opentelemetry import trace
from pydantic import BaseModel
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType, PendingActivityState, PendingWorkflowTaskState
from temporalio.api.failure.v1 import Failure
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryReverseRequest
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError, CancelledError, FailureError, TerminatedError
from temporalio.exceptions import TimeoutError as TemporalTimeoutError
from temporalio.service import RPCError, RPCStatusCode

from liftloop.loop.spec import CampaignSpec, SpecError
from liftloop.settings import Settings
from tools.audit import AuditEvent, AuditLog, canonical
from tools.durations import MAX_DURATION_S
from workflows.campaign_loop import (
    CampaignLoopInput,
    CampaignLoopOutput,
    CampaignLoopWorkflow,
    CampaignStatus,
    Outcome,
)

Control = Literal["pause", "resume", "stop"]
# signalled: the workflow got the signal (a stop ends it at its next step); stopped: it ended
# while we watched; terminated: the signal could not take effect, so the workflow was ended.
ControlEffect = Literal["signalled", "stopped", "terminated"]

MAX_SHARDS = 256
# How long a stop watches the workflow take the signal before it returns.
STOP_GRACE_S = 3.0
_QUERY_TIMEOUT = timedelta(seconds=5)
# A workflow task waiting this long for a worker means none polls: a query would only wait.
_NO_WORKER_AFTER = timedelta(seconds=2)
_RUNNING = WorkflowExecutionStatus.RUNNING
tracer = trace.get_tracer("liftloop.campaigns")
_WORKFLOW_TYPE = "CampaignLoopWorkflow"


class CampaignNotFound(LookupError):
    """No campaign with this id; `field` and `reason` as the CLI and API print them."""

    field = "campaign_id"

    def __init__(self, campaign_id: str) -> None:
        self.campaign_id, self.reason = campaign_id, f"no campaign {campaign_id}"
        super().__init__(f"{self.field}: {self.reason}")


class CampaignEnded(RuntimeError):
    """A control for a campaign that has already ended."""

    field = "campaign_id"

    def __init__(self, campaign_id: str, outcome: str) -> None:
        self.campaign_id, self.outcome = campaign_id, outcome
        self.reason = f"campaign {campaign_id} has already ended ({outcome})"
        super().__init__(f"{self.field}: {self.reason}")


class CampaignStarted(BaseModel):
    campaign_id: str
    workflow_id: str
    run_id: str | None
    # The first cycle's trace (`liftloop traces show`); None when this process does not trace.
    trace_id: str | None = None


class ControlResult(BaseModel):
    campaign_id: str
    action: Control
    effect: ControlEffect
    reason: str | None = None


class CampaignSummary(BaseModel):
    campaign_id: str
    workflow_id: str
    run_id: str | None
    outcome: Outcome
    reason: str | None = None
    cycles: int | None = None
    started_at: datetime | None = None
    closed_at: datetime | None = None


def workflow_id_for(campaign_id: str) -> str:
    return f"campaign-{campaign_id}"


def loop_input(
    spec: CampaignSpec, settings: Settings, started_by: str | None = None
) -> CampaignLoopInput:
    """The workflow's input; a ValueError names settings no timer or worker can honour."""
    problems = []
    if not 1 <= settings.shards <= MAX_SHARDS:
        problems.append(f"LIFTLOOP_SHARDS must be 1 to {MAX_SHARDS}")
    for name, value in (
        ("LIFTLOOP_APPROVAL_TIMEOUT_S", settings.approval_timeout_s),
        ("LIFTLOOP_ATTRIBUTION_WINDOW_OVERRIDE_S", settings.attribution_window_override_s),
    ):
        if not (math.isfinite(value) and 0 <= value <= MAX_DURATION_S):
            problems.append(f"{name} must be 0 to {MAX_DURATION_S:.0f} seconds")
    if problems:
        raise ValueError("settings: " + "; ".join(problems))
    return CampaignLoopInput(
        spec=spec,
        shards=settings.shards,
        attribution_window_s=settings.attribution_window_override_s or None,
        approval_timeout_s=settings.approval_timeout_s,
        approval_escalation_s=settings.approval_escalation_s or None,
        started_by=started_by,
    )


def check_encodable(client: Client, inp: CampaignLoopInput, max_bytes: int) -> None:
    """SpecError unless the worker reads back exactly this input, within `max_bytes`.

    The worker decodes with the same converter; what does not survive the round trip (a value
    JSON cannot carry) would fail every workflow task of the campaign instead of starting it."""
    converter = client.data_converter.payload_converter
    try:
        payloads = converter.to_payloads([inp])
        back = converter.from_payloads(payloads, [CampaignLoopInput])
    except Exception as exc:
        reason = f"cannot be encoded for the worker ({type(exc).__name__})"
        raise SpecError([("spec", reason)]) from None
    size = sum(p.ByteSize() for p in payloads)
    if size > max_bytes:
        reason = f"is {size} bytes encoded; at most {max_bytes} are allowed"
        raise SpecError([("spec", reason)])
    if back != [inp]:
        raise SpecError([("spec", "does not read back the same after encoding for the worker")])


async def start_campaign(
    client: Client,
    settings: Settings,
    spec: CampaignSpec,
    task_queue: str | None = None,
    *,
    audit: AuditLog,
    actor: str,
) -> CampaignStarted:
    """Start the campaign's workflow and log who started it with which spec."""
    inp = loop_input(spec, settings, started_by=actor)
    check_encodable(client, inp, settings.spec_max_bytes)
    # The root of the first cycle's trace, whoever starts it (the CLI, the API, the demo's span
    # around it); each later cycle has its own trace (liftloop/cycle_tracing.py).
    with tracer.start_as_current_span(
        "campaign.start",
        attributes={"liftloop.campaign_id": spec.id, "liftloop.cycle": 1},
    ) as span:
        context = span.get_span_context()
        trace_id = format(context.trace_id, "032x") if context.is_valid else None
        handle = await client.start_workflow(
            CampaignLoopWorkflow.run,
            inp,
            id=workflow_id_for(spec.id),
            task_queue=task_queue or settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        )
    spec_json = spec.model_dump(mode="json")
    audit.append(
        AuditEvent(
            kind="campaign.start",
            actor=actor,
            campaign_id=spec.id,
            subject=handle.id,
            details={
                "run_id": handle.result_run_id,
                "trace_id": trace_id,
                "spec_sha256": hashlib.sha256(canonical(spec_json).encode()).hexdigest(),
                "spec": spec_json,
            },
            key=f"campaign.start:{handle.id}:{handle.result_run_id}",
        )
    )
    return CampaignStarted(
        campaign_id=spec.id, workflow_id=handle.id, run_id=handle.result_run_id, trace_id=trace_id
    )


def handle_for(
    client: Client, campaign_id: str, run_id: str | None = None
) -> WorkflowHandle[CampaignLoopWorkflow, CampaignLoopOutput]:
    return client.get_workflow_handle_for(
        CampaignLoopWorkflow.run, workflow_id_for(campaign_id), run_id=run_id
    )


async def _describe(
    handle: WorkflowHandle[Any, Any], campaign_id: str
) -> WorkflowExecutionDescription:
    try:
        return await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise CampaignNotFound(campaign_id) from None
        raise


def _failure_text(message: str, cause: FailureError | Failure | None, depth: int = 3) -> str:
    """A failure's message followed by those of its causes ('Activity task failed: ...'); the
    causes are Python failures (from a result) or their protos (from a history event)."""
    parts = [message] if message else []
    while cause is not None and depth > 0:
        if cause.message and cause.message not in parts:
            parts.append(cause.message)
        if isinstance(cause, FailureError):
            cause = cause.cause if isinstance(cause.cause, FailureError) else None
        else:
            cause = cause.cause if cause.HasField("cause") else None
        depth -= 1
    text = " ".join(": ".join(parts).split())  # one line
    return (text if len(text) <= 600 else text[:599] + "…") or "no reason recorded"


def _proto_cause(failure: Failure) -> Failure | None:
    return failure.cause if failure.HasField("cause") else None


async def _task_failure(client: Client, desc: WorkflowExecutionDescription) -> str:
    """The message of the latest failed workflow task (read from the end of the history)."""
    request = GetWorkflowExecutionHistoryReverseRequest(
        namespace=client.namespace,
        execution=WorkflowExecution(workflow_id=desc.id, run_id=desc.run_id),
        maximum_page_size=50,
    )
    try:
        page = await client.workflow_service.get_workflow_execution_history_reverse(request)
    except RPCError:
        return "no reason recorded"
    for event in page.history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            failure = event.workflow_task_failed_event_attributes.failure
            return _failure_text(failure.message, _proto_cause(failure))
    return "no reason recorded"


async def stuck_reason(client: Client, desc: WorkflowExecutionDescription) -> str | None:
    """Why a running campaign cannot move (a failing workflow task, an activity waiting for its
    next retry after failures), or None."""
    raw = desc.raw_description
    if raw.HasField("pending_workflow_task") and raw.pending_workflow_task.attempt > 1:
        attempt = raw.pending_workflow_task.attempt
        detail = await _task_failure(client, desc)
        return f"the workflow task is failing (attempt {attempt}): {detail}"
    for act in raw.pending_activities:
        if (
            act.state == PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED
            and act.attempt > 1
            and act.HasField("last_failure")
        ):
            detail = _failure_text(act.last_failure.message, _proto_cause(act.last_failure))
            return f"activity {act.activity_type.name} is failing (attempt {act.attempt}): {detail}"
    return None


def _waiting_for_worker(desc: WorkflowExecutionDescription) -> str | None:
    """Why a query would find no worker: the first task was never taken, or a task has waited
    longer than any polling worker would leave it."""
    raw = desc.raw_description
    if not raw.HasField("pending_workflow_task"):
        return None
    task = raw.pending_workflow_task
    if task.state != PendingWorkflowTaskState.PENDING_WORKFLOW_TASK_STATE_SCHEDULED:
        return None
    if raw.workflow_execution_info.history_length <= 2:
        return "waiting for a worker to start it"
    waited = datetime.now(UTC) - task.scheduled_time.ToDatetime(UTC)
    if waited > _NO_WORKER_AFTER:
        return f"no worker has taken its next task for {waited.total_seconds():.0f} s"
    return None


async def _ended(
    client: Client, workflow_id: str, run_id: str | None, status: WorkflowExecutionStatus | None
) -> tuple[Outcome, str | None, CampaignLoopOutput | None]:
    """Outcome, reason and (when it completed) the output of an ended campaign."""
    handle = client.get_workflow_handle_for(CampaignLoopWorkflow.run, workflow_id, run_id=run_id)
    try:
        output = await handle.result(follow_runs=False)
    except WorkflowFailureError as exc:
        cause = exc.cause
        if isinstance(cause, TerminatedError):
            return "stopped", f"terminated: {cause.message}", None
        if isinstance(cause, CancelledError):
            return "stopped", "cancelled", None
        if isinstance(cause, TemporalTimeoutError):
            return "failed", "the workflow timed out", None
        if isinstance(cause, ApplicationError) and cause.type == "CampaignFailed":
            return "failed", cause.message, None  # the workflow's own reason, stage included
        if isinstance(cause, FailureError):
            inner = cause.cause if isinstance(cause.cause, FailureError) else None
            return "failed", _failure_text(cause.message, inner), None
        return "failed", str(cause) or "no reason recorded", None
    if status is not None and status != WorkflowExecutionStatus.COMPLETED:
        return "failed", f"the workflow ended {status.name.lower()}", output
    return output.outcome, None, output


async def _start_input(client: Client, workflow_id: str, run_id: str) -> CampaignLoopInput | None:
    """The run's input as the worker reads it, or None when it cannot be read."""
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    async for event in handle.fetch_history_events():
        payloads = event.workflow_execution_started_event_attributes.input.payloads
        try:
            values = await client.data_converter.decode(payloads, [CampaignLoopInput])
        except Exception:
            return None
        value = values[0] if values else None
        return value if isinstance(value, CampaignLoopInput) else None
    return None


def _status_without_worker(
    campaign_id: str,
    inp: CampaignLoopInput | None,
    outcome: Outcome,
    reason: str | None,
    done: bool,
) -> CampaignStatus:
    return CampaignStatus(
        campaign_id=campaign_id,
        cycle=inp.cycle if inp else 0,
        stage="done" if done else "starting",
        paused=bool(inp and inp.paused and not done),
        stop_requested=outcome == "stopped",
        outcome=outcome,
        pending_approvals=[],
        history=inp.history if inp else [],
        reason=reason,
        started_by=inp.started_by if inp else None,
    )


async def campaign_status(client: Client, campaign_id: str) -> CampaignStatus:
    """Cycle, stage, pending approvals, results, and for a failed campaign the reason."""
    handle = handle_for(client, campaign_id)
    desc = await _describe(handle, campaign_id)
    if desc.status == _RUNNING:
        stuck = await stuck_reason(client, desc) or _waiting_for_worker(desc)
        if stuck is None or stuck.startswith("activity "):
            try:
                status = await handle.query(CampaignLoopWorkflow.status, rpc_timeout=_QUERY_TIMEOUT)
            except (WorkflowQueryFailedError, RPCError) as exc:
                stuck = f"the status query failed: {exc}"
            else:
                return status.model_copy(update={"reason": stuck}) if stuck else status
        inp = await _start_input(client, desc.id, desc.run_id)
        return _status_without_worker(campaign_id, inp, "running", stuck, done=False)
    outcome, reason, output = await _ended(client, desc.id, desc.run_id, desc.status)
    if output is not None:
        return CampaignStatus(
            campaign_id=campaign_id,
            cycle=output.cycles,
            stage="done",
            paused=False,
            stop_requested=outcome == "stopped",
            outcome=outcome,
            pending_approvals=[],
            history=output.history,
            reason=reason,
        )
    inp = await _start_input(client, desc.id, desc.run_id)
    return _status_without_worker(campaign_id, inp, outcome, reason, done=True)


async def list_campaigns(client: Client, limit: int = 100) -> list[CampaignSummary]:
    """The latest run of each campaign, newest first, with its outcome and, when it failed or
    was stopped from outside, the reason."""
    query = f"WorkflowType = '{_WORKFLOW_TYPE}' AND ExecutionStatus != 'ContinuedAsNew'"
    executions = [e async for e in client.list_workflows(query, limit=limit)]
    gate = asyncio.Semaphore(8)

    async def summary(e: Any) -> CampaignSummary:
        outcome: Outcome = "running"
        reason: str | None = None
        cycles: int | None = None
        async with gate:
            if e.status == _RUNNING:
                try:
                    desc = await client.get_workflow_handle(e.id, run_id=e.run_id).describe()
                    reason = await stuck_reason(client, desc)
                except RPCError:
                    reason = None
            else:
                outcome, reason, output = await _ended(client, e.id, e.run_id, e.status)
                cycles = output.cycles if output else None
        return CampaignSummary(
            campaign_id=e.id.removeprefix("campaign-"),
            workflow_id=e.id,
            run_id=e.run_id,
            outcome=outcome,
            reason=reason,
            cycles=cycles,
            started_at=e.start_time,
            closed_at=e.close_time,
        )

    return list(await asyncio.gather(*(summary(e) for e in executions)))


async def control_campaign(
    client: Client,
    campaign_id: str,
    action: Control,
    grace_s: float = STOP_GRACE_S,
    *,
    audit: AuditLog,
    actor: str,
) -> ControlResult:
    """Pause, resume or stop, logged with who asked and what it did. CampaignNotFound for an
    unknown campaign, CampaignEnded for one that has ended. A stop that cannot take effect
    terminates the workflow (see the module)."""
    result = await _control(client, campaign_id, action, grace_s)
    audit.append(
        AuditEvent(
            kind=f"campaign.{action}",
            actor=actor,
            campaign_id=campaign_id,
            subject=workflow_id_for(campaign_id),
            details={"effect": result.effect, "reason": result.reason},
        )
    )
    return result


async def _control(
    client: Client, campaign_id: str, action: Control, grace_s: float
) -> ControlResult:
    handle = handle_for(client, campaign_id)
    desc = await _describe(handle, campaign_id)
    if desc.status != _RUNNING:
        outcome, _, _ = await _ended(client, desc.id, desc.run_id, desc.status)
        raise CampaignEnded(campaign_id, outcome)
    signal = {
        "pause": CampaignLoopWorkflow.pause,
        "resume": CampaignLoopWorkflow.resume,
        "stop": CampaignLoopWorkflow.stop,
    }[action]
    try:
        await handle.signal(signal)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:  # it ended in between
            raise CampaignEnded(campaign_id, "ended") from None
        raise
    if action != "stop":
        return ControlResult(campaign_id=campaign_id, action=action, effect="signalled")
    return await _see_stop(client, handle, campaign_id, grace_s)


async def _see_stop(
    client: Client,
    handle: WorkflowHandle[CampaignLoopWorkflow, CampaignLoopOutput],
    campaign_id: str,
    grace_s: float,
) -> ControlResult:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    while True:
        desc = await handle.describe()
        if desc.status != _RUNNING:
            return ControlResult(campaign_id=campaign_id, action="stop", effect="stopped")
        stuck = await stuck_reason(client, desc)
        if stuck is not None:
            reason = f"stop requested while {stuck}"
            try:
                await handle.terminate(reason=reason[:1000])
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:  # not found: it ended by itself
                    raise
            return ControlResult(
                campaign_id=campaign_id, action="stop", effect="terminated", reason=reason
            )
        if not desc.raw_description.HasField("pending_workflow_task") or loop.time() >= deadline:
            # No task pending: the workflow took the signal and will stop at its next step.
            return ControlResult(campaign_id=campaign_id, action="stop", effect="signalled")
        await asyncio.sleep(0.2)
