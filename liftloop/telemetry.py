"""Tracing: OTLP/HTTP when an endpoint is set, otherwise a local JSON Lines span file that an
auditor can read without any server."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from liftloop.settings import Settings

_lock = threading.Lock()
_provider: TracerProvider | None = None


class JsonlSpanExporter(SpanExporter):
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(
            json.dumps(json.loads(s.to_json()), separators=(",", ":")) + "\n" for s in spans
        )
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(lines)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def spans_path(settings: Settings) -> Path:
    return settings.data_dir / "traces" / "spans.jsonl"


def setup_tracing(settings: Settings, component: str) -> TracerProvider:
    """Installs the global tracer provider once per process."""
    global _provider
    with _lock:
        if _provider is not None:
            return _provider
        resource = Resource.create(
            {"service.name": settings.service_name, "liftloop.component": component}
        )
        provider = TracerProvider(resource=resource)
        exporter: SpanExporter
        if settings.otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint.rstrip("/") + "/v1/traces")
        else:
            exporter = JsonlSpanExporter(spans_path(settings))
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
        trace.set_tracer_provider(provider)
        _provider = provider
        return provider


def flush_tracing() -> None:
    if _provider is not None:
        _provider.force_flush()
