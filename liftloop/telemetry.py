"""Tracing: OTLP/HTTP when an endpoint is set, otherwise a local JSON Lines span file that an
auditor can read without any server."""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Sequence
from datetime import datetime
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
        with self._lock:
            while True:
                with self.path.open("a", encoding="utf-8") as fh:
                    # The retention job rewrites the file under this lock: append to the file
                    # that is in place once we hold it, not to one it has replaced.
                    fcntl.flock(fh, fcntl.LOCK_EX)
                    if os.fstat(fh.fileno()).st_ino == os.stat(self.path).st_ino:
                        fh.write(lines)
                        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def _started_before(line: str, before: datetime) -> bool:
    try:
        started = datetime.fromisoformat(json.loads(line)["start_time"].replace("Z", "+00:00"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return False  # a line being written, or not a span: kept
    return started < before


def expire_spans(path: Path, before: datetime, *, apply: bool) -> int:
    """The spans in `path` that started before `before`; with `apply` they are removed (the
    file is rewritten whole under the exporters' lock)."""
    with path.open("r", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        dropped = 0
        tmp = path.with_name(path.name + ".retention")
        with tmp.open("w", encoding="utf-8") as out:
            for line in fh:
                if _started_before(line, before):
                    dropped += 1
                else:
                    out.write(line)
        if apply and dropped:
            os.replace(tmp, path)
        else:
            tmp.unlink()
    return dropped


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
