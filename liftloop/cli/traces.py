"""`liftloop traces list|show`: the local span file for an auditor, no tracing server needed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from liftloop.cli import output
from liftloop.cli.output import JsonOption
from liftloop.settings import Settings, get_settings

if TYPE_CHECKING:
    from liftloop.span_file import Span

app = typer.Typer(
    name="traces", help="Read the local span file: traces and their spans.", no_args_is_help=True
)


def register(root: typer.Typer) -> None:
    """Add the `traces` group to `root`."""
    root.add_typer(app)


# Left out of the tree (`--json` has them): ids Temporal puts on each of its spans.
_QUIET = frozenset({"temporalActivityID", "temporalRunID"})
_MAX_VALUE = 100


def _value(value: Any) -> str:
    text = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 1] + "…"


def _attributes(attributes: dict[str, Any], shown: dict[str, Any]) -> str:
    """`key=value` of the attributes an ancestor has not shown with the same value."""
    return " ".join(
        f"{k}={_value(v)}"
        for k, v in attributes.items()
        if k not in _QUIET and shown.get(k, object()) != v
    )


def _lines(span: Span, trace_id: str, depth: int, shown: dict[str, Any]) -> list[str]:
    status = span.status
    if span.status_description:
        status += f" ({span.status_description})"
    pad = "  " * depth
    line = f"{pad}{span.name}  {span.duration_ms:.1f} ms  {status}"
    attrs = _attributes(span.attributes, shown)
    if attrs:
        line += f"  {attrs}"
    lines = [line]
    for t, _ in span.links:
        if t != trace_id:
            lines.append(f"{pad}  ↪ links to trace {t}")
    for event in span.events:
        text = _attributes(event["attributes"], {})
        lines.append(f"{pad}  • {event['name']}" + (f"  {text}" if text else ""))
    inherited = {**shown, **span.attributes}
    for child in span.children:
        lines += _lines(child, trace_id, depth + 1, inherited)
    return lines


def _missing(settings: Settings, what: str) -> str:
    from liftloop.telemetry import spans_path

    path = spans_path(settings)
    if not path.exists():
        where = f"no span file at {path}"
        if settings.otlp_endpoint:
            where += f" (spans go to {settings.otlp_endpoint})"
        return f"{what}: {where}"
    return f"{what} in {path}"


@app.command("show")
def traces_show(
    trace_id: Annotated[
        str, typer.Argument(help="The trace's id: 32 hex characters (`liftloop demo` prints it).")
    ],
    as_json: JsonOption = False,
) -> None:
    """Print one trace as a tree: each span with its duration, status and attributes, its
    events (one per approval request, per guard verdict) and its links to other traces."""
    from liftloop.span_file import TraceIdError, load_trace, parse_trace_id
    from liftloop.telemetry import spans_path

    settings = get_settings()
    try:
        wanted = parse_trace_id(trace_id)
    except TraceIdError as exc:
        output.fail_on(exc, as_json=as_json)
    found = load_trace(spans_path(settings), wanted)
    if found is None:
        output.fail("trace_id", _missing(settings, f"no trace {wanted}"), as_json=as_json)
    lines = [
        f"trace {found.trace_id}: {found.spans} spans from {found.start:%Y-%m-%d %H:%M:%S} UTC,"
        f" {found.duration_ms / 1000:.1f} s"
    ]
    for root in found.roots:
        if root.parent_id:
            lines.append(f"(parent {root.parent_id} is not in the file)")
        lines += _lines(root, found.trace_id, 0, {})
    lines += [f"linked from trace {t} ({name})" for t, name in found.linked_from]
    output.emit(found.as_json(), as_json=as_json, human="\n".join(lines))


@app.command("list")
def traces_list(
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many.")] = 20,
    campaign: Annotated[
        str | None, typer.Option("--campaign", help="Only the traces of this campaign.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List the traces of the span file, newest first: id, root span, start, span count, and
    the campaign and cycle they belong to."""
    from liftloop.span_file import read_spans, summarize
    from liftloop.telemetry import spans_path

    settings = get_settings()
    traces = summarize(read_spans(spans_path(settings)))
    if campaign is not None:
        traces = [t for t in traces if t.campaign_id == campaign]
    traces = traces[:limit]
    # Plain lines, not a table: a table would cut the ids to the terminal's width.
    lines = [
        f"{t.trace_id}  {t.start:%Y-%m-%d %H:%M:%S}  {t.spans:>5} spans  {t.root}"
        + (f"  campaign {t.campaign_id}" if t.campaign_id else "")
        + (f" cycle {t.cycle}" if t.cycle is not None else "")
        for t in traces
    ]
    output.emit({"traces": [t.as_json() for t in traces]}, as_json=as_json, human="\n".join(lines))
