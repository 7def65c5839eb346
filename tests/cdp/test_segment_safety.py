"""Names in segment specs are identifiers, never JSON-path or SQL syntax, and specs nest a
bounded depth: every fault is a `SegmentError` (non-retryable in the campaign workflow) with
the path of the condition, raised before any SQL runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from liftloop.cli.cdp import register
from liftloop.settings import get_settings
from tools.cdp.contracts import ContractRegistry
from tools.cdp.ingest import ingest
from tools.cdp.segments import MAX_DEPTH, SegmentError, compile_segment, count_segment

BAD_NAMES = ["a.b", "$[0]", "x'; DROP TABLE profiles; --", '"quoted"', "", "1st", "a" * 65, "é"]


@pytest.fixture
def people(engine: Engine, registry: ContractRegistry, m: Any) -> Engine:
    msgs = [
        m.msg("identify", "i1", uid="u1", traits={"plan_tier": "gold", "a": {"b": "nested"}}),
        m.msg("identify", "i2", uid="u2", traits={"plan_tier": "basic", "a.b": "flat"}),
        m.order("o1", "u1", 10.0, "2026-01-01T00:00:00Z"),
    ]
    ingest(engine, msgs, source="crm", registry=registry)
    return engine


def _error(spec: Any, path: str = "segment") -> SegmentError:
    with pytest.raises(SegmentError) as caught:
        compile_segment(spec, path)
    # The workflow's non-retryable list names the class itself, not a base class.
    assert type(caught.value) is SegmentError
    return caught.value


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_a_trait_name_that_is_not_an_identifier_is_refused_with_its_path(people: Engine, name: str):
    spec = {"all": [{"trait": "plan_tier", "eq": "gold"}, {"trait": name, "eq": "nested"}]}
    err = _error(spec, "audience.segment")
    assert err.field == "audience.segment.all.1.trait"
    assert "trait name" in err.reason
    # The same through a count on the database: the error, not SQL.
    with pytest.raises(SegmentError):
        count_segment(people, spec)


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_a_property_name_that_is_not_an_identifier_is_refused_with_its_path(name: str):
    spec = {"any": [{"event": "order_completed", "where": {name: 1}, "count_gte": 1}]}
    err = _error(spec)
    assert err.field == "segment.any.0.where" and "property name" in err.reason


def test_a_dotted_name_reads_no_nested_value(people: Engine):
    """`a.b` once read traits.a.b (u1's nested value); it is refused, and the plain names that
    remain read exactly the key they name."""
    _error({"trait": "a.b", "eq": "nested"})
    assert count_segment(people, {"trait": "plan_tier", "eq": "gold"}) == 1
    assert count_segment(people, {"trait": "_Plan2", "eq": "gold"}) == 0


def test_valid_names_still_work(people: Engine):
    spec = {
        "all": [
            {"trait": "plan_tier", "in": ["gold", "basic"]},
            {"trait": "country", "eq": "US"},  # a profile column
            {"event": "order_completed", "where": {"order_id": "o-o1"}, "count_gte": 1},
        ]
    }
    assert count_segment(people, spec) == 1


@pytest.mark.parametrize("kind", ["not", "all", "any"])
def test_nesting_300_deep_is_a_named_error(people: Engine, kind: str):
    spec: Any = {"trait": "plan_tier", "eq": "gold"}
    for _ in range(300):
        spec = {"not": spec} if kind == "not" else {kind: [spec]}
    err = _error(spec)
    assert f"more than {MAX_DEPTH} levels" in err.reason
    step = ".not" if kind == "not" else f".{kind}.0"
    assert err.field == "segment" + step * (MAX_DEPTH + 1)
    with pytest.raises(SegmentError):
        count_segment(people, spec)


def test_nesting_up_to_the_limit_compiles(people: Engine):
    spec: Any = {"trait": "plan_tier", "eq": "gold"}
    for _ in range(MAX_DEPTH):
        spec = {"all": [spec]}
    assert count_segment(people, spec) == 1


def test_inlined_segment_references_count_towards_the_depth():
    segments: dict[str, Any] = {"s0": {"trait": "plan_tier", "eq": "gold"}}
    for n in range(1, 40):
        segments[f"s{n}"] = {"segment": f"s{n - 1}"}
    with pytest.raises(SegmentError) as caught:
        compile_segment({"segment": "s39"}, segments=segments)
    assert "levels" in caught.value.reason


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("LIFTLOOP_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.sqlite'}")
    monkeypatch.setenv("LIFTLOOP_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    yield lambda *args: runner.invoke(app, list(args))
    get_settings.cache_clear()


@pytest.mark.parametrize(
    "spec",
    [
        {"all": [{"trait": "country", "eq": "DE"}, {"trait": "x'; DROP", "eq": 1}]},
        {"all": [{"trait": '"quoted"', "eq": 1}]},
    ],
)
def test_segment_count_answers_a_quoted_name_with_the_path(cli: Any, tmp_path: Path, spec: Any):
    seg = tmp_path / "bad.json"
    seg.write_text(json.dumps(spec))
    r = cli("segment", "count", str(seg), "--json")
    assert r.exit_code == 2, r.output
    out = json.loads(r.stdout)
    assert out["field"].startswith("segment.all.") and out["field"].endswith(".trait")
    assert "Traceback" not in r.output


def test_segment_count_answers_deep_nesting_with_the_path(cli: Any, tmp_path: Path):
    spec: Any = {"trait": "country", "eq": "DE"}
    for _ in range(300):
        spec = {"not": spec}
    seg = tmp_path / "deep.json"
    seg.write_text(json.dumps(spec))
    r = cli("segment", "count", str(seg), "--json")
    assert r.exit_code == 2, r.output
    assert "levels" in json.loads(r.stdout)["reason"]
