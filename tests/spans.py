"""Spans of the test process written to a span file, as a worker writes them.

OpenTelemetry takes one global tracer provider per process: this module makes sure there is an
SDK provider (or reuses the one another test package installed) and adds, once, a processor
that writes each ended span to the file of the test running `record_spans` (nowhere otherwise).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from liftloop.telemetry import JsonlSpanExporter


class _Switch(SpanExporter):
    def __init__(self) -> None:
        self.target: JsonlSpanExporter | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        target = self.target
        return target.export(spans) if target is not None else SpanExportResult.SUCCESS


_SWITCH = _Switch()


def _install() -> None:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(_SWITCH))


_install()


@contextmanager
def record_spans(path: Path) -> Iterator[Path]:
    """Every span this process ends meanwhile is appended to `path` (JSON Lines)."""
    _SWITCH.target = JsonlSpanExporter(path)
    try:
        yield path
    finally:
        _SWITCH.target = None


def spans_in(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def trace_of(span: dict[str, Any]) -> str:
    return str(span["context"]["trace_id"]).removeprefix("0x")


def named(spans: list[dict[str, Any]], name: str, **attributes: Any) -> list[dict[str, Any]]:
    """The spans called `name` whose attributes include these (dots as `__`)."""
    want = {k.replace("__", "."): v for k, v in attributes.items()}
    return [
        s
        for s in spans
        if s["name"] == name and all(s["attributes"].get(k) == v for k, v in want.items())
    ]
