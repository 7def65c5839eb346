from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from liftloop.cli.cdp import register
from liftloop.settings import get_settings


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("LIFTLOOP_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.sqlite'}")
    monkeypatch.setenv("LIFTLOOP_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    app = typer.Typer()
    register(app)
    runner = CliRunner()

    def run(*args: str) -> Any:
        result = runner.invoke(app, list(args))
        return result

    yield run
    get_settings.cache_clear()


def test_ingest_count_replay_export_erase(cli: Any, tmp_path: Path, m: Any):
    lines = [
        json.dumps(m.order("l1", "u1", 30.0, "2026-01-10T00:00:00Z")),
        json.dumps(
            m.msg("identify", "l2", uid="u1", traits={"country": "DE", "email": "u1@example.com"})
        ),
        json.dumps(m.msg("track", "l3", uid="u2", event="gift_wrapped", properties={})),
        "{broken json",
        json.dumps(m.order("l1", "u1", 30.0, "2026-01-10T00:00:00Z")),
    ]
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(lines) + "\n")
    r = cli("events", "ingest", str(events), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"accepted": 2, "duplicates": 1, "quarantined": 2}

    seg = tmp_path / "de_buyers.yaml"
    seg.write_text(
        "all:\n  - {trait: country, eq: DE}\n"
        "  - {event: order_completed, within: 365d, count_gte: 1}\n"
    )
    r = cli("segment", "count", str(seg), "--json", "--as-of", "2026-02-01T00:00:00")
    assert json.loads(r.stdout) == {"segment": "de_buyers", "count": 1}

    contracts = tmp_path / "contracts"
    contracts.mkdir()
    (contracts / "gift_wrapped.yaml").write_text("event: gift_wrapped\nversion: 1\n")
    r = cli("contracts", "replay", "--contracts", str(contracts), "--json")
    assert json.loads(r.stdout) == {"examined": 2, "replayed": 1, "still_quarantined": 1}

    r = cli("privacy", "export", "u1@example.com")
    exported = json.loads(r.stdout)
    assert exported["profile_id"] == "u1" and len(exported["events"]) == 2
    r = cli("privacy", "erase", "u1", "--json")
    assert json.loads(r.stdout)["rows"]["profiles"] == 1
    r = cli("privacy", "export", "u1")
    assert r.exit_code == 2
    assert json.loads(r.stdout)["field"] == "id"


def test_bad_segment_file_names_the_path(cli: Any, tmp_path: Path):
    seg = tmp_path / "bad.json"
    seg.write_text(json.dumps({"all": [{"event": "order_completed", "count_gte": "many"}]}))
    r = cli("segment", "count", str(seg), "--json")
    assert r.exit_code == 2
    assert json.loads(r.stdout)["field"] == "segment.all.0.count_gte"


def test_sources_add_prints_key(cli: Any):
    r = cli("sources", "add", "shop", "--json")
    out = json.loads(r.stdout)
    assert out["source"] == "shop" and out["write_key"].startswith("wk_")
    r = cli("sources", "add", "shop", "--json")
    assert r.exit_code == 2 and json.loads(r.stdout)["field"] == "name"
