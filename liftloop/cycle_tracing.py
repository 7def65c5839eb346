"""One trace per campaign cycle: Temporal's TracingInterceptor, except that a workflow which
continues as new (the campaign loop does after each cycle) runs its next cycle in a new trace.

Temporal's interceptor carries the starter's trace into every run that follows, so a campaign
of a hundred daily cycles would be one trace spanning months. Here, at each continue-as-new,
the ending run's trace gets a `ContinueAsNew:<workflow>` span naming the next trace
(`liftloop.next_trace_id`), and the next run starts under a new root span `campaign.cycle`
(campaign id, cycle, `liftloop.previous_trace_id`) that links to it. The first cycle's trace
is its starter's (`campaign.start`, or the demo's span).

Replay-safe: only the continue-as-new command's trace header changes, which Temporal does not
compare on replay, and no span is made while replaying (the interceptor's own rule).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

import opentelemetry.context
import opentelemetry.trace
from opentelemetry.trace import Link, SpanKind
from temporalio import workflow
from temporalio.contrib.opentelemetry import TracingInterceptor, TracingWorkflowInboundInterceptor
from temporalio.worker import (
    ContinueAsNewInput,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

# The extern function the workflow side calls (workflow code cannot make spans itself).
_NEXT_CYCLE_TRACE = "__liftloop_next_cycle_trace"
CYCLE_SPAN = "campaign.cycle"


def trace_id_hex(span_context: opentelemetry.trace.SpanContext) -> str:
    return format(span_context.trace_id, "032x")


class CycleTracingInterceptor(TracingInterceptor):
    """TracingInterceptor with a new trace per continue-as-new (see the module)."""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[TracingWorkflowInboundInterceptor]:
        super().workflow_interceptor_class(input)
        input.unsafe_extern_functions[_NEXT_CYCLE_TRACE] = self._next_cycle_trace
        return _CycleWorkflowInbound

    def _next_cycle_trace(self, params: Mapping[str, Any]) -> dict[str, str]:
        """Ends the current trace's run with a `ContinueAsNew` span and opens the next run's
        trace; returns the carrier of the next trace's root."""
        time_ns: int = params["time_ns"]
        attributes: dict[str, Any] = dict(params["attributes"])
        cycle: int | None = params["cycle"]
        current = self.text_map_propagator.extract(params["current"])
        previous = opentelemetry.trace.get_current_span(current).get_span_context()
        root = self.tracer.start_span(
            CYCLE_SPAN,
            opentelemetry.context.Context(),  # no parent: a new trace
            attributes={
                **attributes,
                **({"liftloop.cycle": cycle} if cycle is not None else {}),
                "liftloop.previous_trace_id": trace_id_hex(previous),
            },
            links=[Link(previous)] if previous.is_valid else [],
            start_time=time_ns,
            kind=SpanKind.INTERNAL,
        )
        root.end(end_time=time_ns)
        marker = self.tracer.start_span(
            f"ContinueAsNew:{params['workflow_type']}",
            current,
            attributes={
                **attributes,
                **({"liftloop.next_cycle": cycle} if cycle is not None else {}),
                "liftloop.next_trace_id": trace_id_hex(root.get_span_context()),
            },
            links=[Link(root.get_span_context())],
            start_time=time_ns,
            kind=SpanKind.INTERNAL,
        )
        marker.end(end_time=time_ns)
        carrier: dict[str, str] = {}
        self.text_map_propagator.inject(carrier, opentelemetry.trace.set_span_in_context(root))
        return carrier


class _CycleWorkflowInbound(TracingWorkflowInboundInterceptor):
    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        # Temporal's outbound interceptor wraps this one: it writes the current trace into the
        # continue-as-new headers first, and this one replaces it with the next cycle's.
        super().init(_CycleWorkflowOutbound(outbound, self))


class _CycleWorkflowOutbound(WorkflowOutboundInterceptor):
    def __init__(self, next: WorkflowOutboundInterceptor, root: _CycleWorkflowInbound) -> None:
        super().__init__(next)
        self._root = root

    def continue_as_new(self, input: ContinueAsNewInput) -> NoReturn:
        current: dict[str, str] = {}
        self._root.text_map_propagator.inject(current)
        if current and not workflow.unsafe.is_replaying():
            info = workflow.info()
            attributes: dict[str, Any] = {
                "temporalWorkflowID": info.workflow_id,
                "temporalRunID": info.run_id,
            }
            # The campaign loop's input: the next cycle's number and the campaign's id.
            arg = input.args[0] if input.args else None
            cycle = getattr(arg, "cycle", None)
            campaign_id = getattr(getattr(arg, "spec", None), "id", None)
            if isinstance(campaign_id, str):
                attributes["liftloop.campaign_id"] = campaign_id
            carrier = workflow.extern_functions()[_NEXT_CYCLE_TRACE](
                {
                    "current": current,
                    "attributes": attributes,
                    "cycle": cycle if isinstance(cycle, int) else None,
                    "workflow_type": input.workflow or info.workflow_type,
                    "time_ns": workflow.time_ns(),
                }
            )
            input.headers = {
                **input.headers,
                self._root.header_key: self._root.payload_converter.to_payloads([carrier])[0],
            }
        super().continue_as_new(input)
