"""`liftloop traces show|list` on a span file written by the SDK's own exporter path: the tree,
links between traces, events, errors, and one-line errors for a bad or unknown trace id."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, Status, StatusCode
from typer.testing import CliRunner

from liftloop.cli import app
from liftloop.settings import Settings, get_settings
from liftloop.telemetry import JsonlSpanExporter, spans_path


def _hex(span: Any) -> str:
    return format(span.get_span_context().trace_id, "032x")


@pytest.fixture
def span_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Two cycles of a campaign (the second linked to the first) and an unrelated trace."""
    monkeypatch.setenv("LIFTLOOP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("LIFTLOOP_OTLP_ENDPOINT", raising=False)
    get_settings.cache_clear()
    path = spans_path(Settings())
    provider = TracerProvider()  # a private one: the global provider is not touched
    provider.add_span_processor(SimpleSpanProcessor(JsonlSpanExporter(path)))
    tracer = provider.get_tracer("test")
    attrs = {"liftloop.campaign_id": "c-1"}
    with tracer.start_as_current_span("other.root"):
        pass
    with tracer.start_as_current_span("campaign.start", attributes={**attrs, "liftloop.cycle": 1}):
        first = trace.get_current_span()
        with tracer.start_as_current_span("stage.guard", attributes={"liftloop.escalated": 1}):
            span = trace.get_current_span()
            span.add_event("guard.verdict", {"liftloop.guard.decision": "escalate"})
            with tracer.start_as_current_span("policies.check_variant"):
                pass
        with tracer.start_as_current_span("stage.send") as send:
            send.set_status(Status(StatusCode.ERROR, "smtp down"))
    second = tracer.start_span(
        "campaign.cycle",
        context=trace.set_span_in_context(trace.INVALID_SPAN),
        attributes={**attrs, "liftloop.cycle": 2},
        links=[Link(first.get_span_context())],
    )
    with trace.use_span(second, end_on_exit=True), tracer.start_as_current_span("stage.measure"):
        pass
    with path.open("a") as fh:
        fh.write('{"name": "half a line')  # being written
    yield {"path": path, "first": _hex(first), "second": _hex(second)}
    get_settings.cache_clear()


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), prog_name="liftloop")


def test_show_prints_the_tree_with_durations_status_events_and_links(
    span_file: dict[str, Any],
) -> None:
    result = _cli("traces", "show", span_file["first"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"trace {span_file['first']}: 4 spans from ")
    names = [(len(ln) - len(ln.lstrip()), ln.split()[0]) for ln in lines[1:]]
    assert names == [
        (0, "campaign.start"),
        (2, "stage.guard"),
        (4, "•"),
        (4, "policies.check_variant"),
        (2, "stage.send"),
        (0, "linked"),
    ]
    assert "liftloop.campaign_id=c-1 liftloop.cycle=1" in lines[1]
    assert " ms  unset  liftloop.escalated=1" in lines[2]
    assert lines[3].strip() == "• guard.verdict  liftloop.guard.decision=escalate"
    assert "  error (smtp down)" in lines[5]
    assert lines[6] == f"linked from trace {span_file['second']} (campaign.cycle)"

    # The later cycle: its root names the earlier trace; inherited attributes are not repeated.
    later = _cli("traces", "show", f"0x{span_file['second'].upper()}").stdout.splitlines()
    assert later[1].startswith("campaign.cycle  ") and "liftloop.cycle=2" in later[1]
    assert later[2] == f"  ↪ links to trace {span_file['first']}"
    assert later[3].startswith("  stage.measure  ") and "campaign_id" not in later[3]


def test_show_json_is_the_tree(span_file: dict[str, Any]) -> None:
    result = _cli("traces", "show", span_file["first"], "--json")
    assert result.exit_code == 0
    body = json.loads(result.stdout)
    assert (body["trace_id"], body["span_count"]) == (span_file["first"], 4)
    (root,) = body["spans"]
    assert root["name"] == "campaign.start" and root["parent_id"] is None
    assert [c["name"] for c in root["children"]] == ["stage.guard", "stage.send"]
    guard = root["children"][0]
    assert guard["events"][0]["name"] == "guard.verdict" and guard["duration_ms"] >= 0
    assert guard["children"][0]["name"] == "policies.check_variant"
    assert root["children"][1]["status"] == "error"
    assert body["linked_from"] == [{"trace_id": span_file["second"], "name": "campaign.cycle"}]


def test_list_shows_recent_root_traces(span_file: dict[str, Any]) -> None:
    body = json.loads(_cli("traces", "list", "--json").stdout)
    assert [(t["root"], t["span_count"], t["cycle"]) for t in body["traces"]] == [
        ("campaign.cycle", 2, 2),
        ("campaign.start", 4, 1),
        ("other.root", 1, None),
    ]
    limited = json.loads(_cli("traces", "list", "--limit", "1", "--json").stdout)
    assert [t["trace_id"] for t in limited["traces"]] == [span_file["second"]]
    mine = _cli("traces", "list", "--campaign", "c-1").stdout.splitlines()
    assert [ln.split()[0] for ln in mine] == [span_file["second"], span_file["first"]]
    assert "campaign.start  campaign c-1 cycle 1" in mine[1]


@pytest.mark.parametrize("bad", ["abc", "0" * 31, "g" * 32, "0" * 33, "0x" + "0" * 30])
def test_a_malformed_trace_id_is_one_line(span_file: dict[str, Any], bad: str) -> None:
    result = _cli("traces", "show", bad)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == (
        f"error: trace_id: {bad!r} is not a trace id (32 hexadecimal characters)\n"
    )


def test_an_unknown_trace_is_one_line(span_file: dict[str, Any]) -> None:
    unknown = "f" * 32
    result = _cli("traces", "show", unknown)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == f"error: trace_id: no trace {unknown} in {span_file['path']}\n"
    as_json = _cli("traces", "show", unknown, "--json")
    assert as_json.exit_code == 2
    assert json.loads(as_json.stdout) == {
        "error": f"trace_id: no trace {unknown} in {span_file['path']}"
    }


def test_no_span_file_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFTLOOP_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("LIFTLOOP_OTLP_ENDPOINT", "http://localhost:4318")
    get_settings.cache_clear()
    try:
        result = _cli("traces", "show", "a" * 32)
        assert _cli("traces", "list").stdout == ""
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    missing = tmp_path / "empty" / "traces" / "spans.jsonl"
    assert result.stderr == (
        f"error: trace_id: no trace {'a' * 32}: no span file at {missing}"
        " (spans go to http://localhost:4318)\n"
    )
