"""Reading the local span file (`liftloop.telemetry.spans_path`): one trace as a tree of spans,
and the traces it holds, newest first. What `liftloop traces` prints.

Each line of the file is one span as OpenTelemetry's SDK writes it (`ReadableSpan.to_json`);
a line that cannot be read (say, the last one while it is being written) is skipped."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

TRACE_ID = re.compile(r"(?:0x)?([0-9a-fA-F]{32})")


class TraceIdError(ValueError):
    """A trace id that is not 32 hexadecimal characters."""

    field = "trace_id"

    def __init__(self, text: str) -> None:
        self.reason = f"{text!r} is not a trace id (32 hexadecimal characters)"
        super().__init__(f"{self.field}: {self.reason}")


def parse_trace_id(text: str) -> str:
    """The trace id as 32 lower-case hex digits (a leading 0x, as the span file has it, is
    allowed); TraceIdError otherwise."""
    match = TRACE_ID.fullmatch(text.strip())
    if match is None:
        raise TraceIdError(text)
    return match.group(1).lower()


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    start: datetime
    end: datetime
    status: str
    status_description: str | None
    attributes: dict[str, Any]
    events: list[dict[str, Any]]
    # (trace id, span id) of each linked span.
    links: list[tuple[str, str]]
    component: str | None
    children: list[Span] = field(default_factory=list)

    @property
    def duration_ms(self) -> float:
        return (self.end - self.start).total_seconds() * 1000

    def as_json(self) -> dict[str, Any]:
        return {
            "span_id": self.span_id,
            "parent_id": self.parent_id,
            "name": self.name,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "duration_ms": round(self.duration_ms, 3),
            "status": self.status,
            "status_description": self.status_description,
            "component": self.component,
            "attributes": self.attributes,
            "events": self.events,
            "links": [{"trace_id": t, "span_id": s} for t, s in self.links],
            "children": [c.as_json() for c in self.children],
        }


def _hex(value: Any) -> str:
    return str(value).removeprefix("0x").lower()


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _span(raw: dict[str, Any]) -> Span:
    context, status = raw["context"], raw.get("status") or {}
    parent = raw.get("parent_id")
    return Span(
        trace_id=_hex(context["trace_id"]),
        span_id=_hex(context["span_id"]),
        parent_id=_hex(parent) if parent else None,
        name=str(raw["name"]),
        start=_time(raw["start_time"]),
        end=_time(raw.get("end_time") or raw["start_time"]),
        status=str(status.get("status_code", "UNSET")).lower(),
        status_description=status.get("description"),
        attributes=dict(raw.get("attributes") or {}),
        events=[
            {
                "name": e.get("name", ""),
                "time": e.get("timestamp"),
                "attributes": dict(e.get("attributes") or {}),
            }
            for e in raw.get("events") or []
        ],
        links=[
            (_hex(link["context"]["trace_id"]), _hex(link["context"]["span_id"]))
            for link in raw.get("links") or []
        ],
        component=((raw.get("resource") or {}).get("attributes") or {}).get("liftloop.component"),
    )


def read_spans(path: Path, containing: str | None = None) -> Iterator[Span]:
    """The spans of the file, in the order written; with `containing`, only the lines that hold
    that text (a quick filter before parsing). Nothing when the file does not exist."""
    if not path.exists():
        return
    with path.open("rb") as fh:
        needle = containing.encode() if containing else None
        for line in fh:
            if needle is not None and needle not in line:
                continue
            try:
                yield _span(orjson.loads(line))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue


@dataclass
class Trace:
    trace_id: str
    # The spans whose parent is not in the trace (the root, and any orphan), each with its
    # children, by start time.
    roots: list[Span]
    spans: int
    start: datetime
    end: datetime
    # Spans of other traces that link to one of this trace's spans: (trace id, span name).
    linked_from: list[tuple[str, str]]

    @property
    def duration_ms(self) -> float:
        return (self.end - self.start).total_seconds() * 1000

    def as_json(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "span_count": self.spans,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "duration_ms": round(self.duration_ms, 3),
            "spans": [r.as_json() for r in self.roots],
            "linked_from": [{"trace_id": t, "name": n} for t, n in self.linked_from],
        }


def _tree(spans: list[Span]) -> list[Span]:
    by_id = {s.span_id: s for s in spans}
    roots = []
    for s in sorted(spans, key=lambda s: (s.start, s.end)):
        parent = by_id.get(s.parent_id) if s.parent_id else None
        if parent is None or parent is s:
            roots.append(s)
        else:
            parent.children.append(s)
    return roots


def load_trace(path: Path, trace_id: str) -> Trace | None:
    """One trace of the span file as a tree, or None when the file has none of its spans."""
    mine: list[Span] = []
    linked_from: dict[tuple[str, str], None] = {}
    for s in read_spans(path, containing=trace_id):
        if s.trace_id == trace_id:
            mine.append(s)
        elif any(t == trace_id for t, _ in s.links):
            linked_from[(s.trace_id, s.name)] = None
    if not mine:
        return None
    return Trace(
        trace_id=trace_id,
        roots=_tree(mine),
        spans=len(mine),
        start=min(s.start for s in mine),
        end=max(s.end for s in mine),
        linked_from=list(linked_from),
    )


@dataclass
class TraceSummary:
    trace_id: str
    root: str
    start: datetime
    end: datetime
    spans: int
    campaign_id: str | None
    cycle: int | None
    _root_start: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "root": self.root,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "span_count": self.spans,
            "campaign_id": self.campaign_id,
            "cycle": self.cycle,
        }


def summarize(spans: Iterable[Span]) -> list[TraceSummary]:
    """One summary per trace, newest first: its root span's name (the earliest span without a
    parent; the earliest span when the root is not in the file), start, span count, and the
    campaign and cycle its spans name."""
    traces: dict[str, TraceSummary] = {}
    for s in spans:
        t = traces.get(s.trace_id)
        if t is None:
            t = traces[s.trace_id] = TraceSummary(
                trace_id=s.trace_id,
                root=s.name,
                start=s.start,
                end=s.end,
                spans=0,
                campaign_id=None,
                cycle=None,
            )
        t.spans += 1
        t.end = max(t.end, s.end)
        if s.parent_id is None and (t._root_start is None or s.start < t._root_start):
            t.root, t._root_start = s.name, s.start
        elif t._root_start is None and s.start < t.start:
            t.root = s.name
        t.start = min(t.start, s.start)
        campaign, cycle = (
            s.attributes.get("liftloop.campaign_id"),
            s.attributes.get("liftloop.cycle"),
        )
        if t.campaign_id is None and isinstance(campaign, str):
            t.campaign_id = campaign
        if t.cycle is None and isinstance(cycle, int):
            t.cycle = cycle
    return sorted(traces.values(), key=lambda t: t.start, reverse=True)
