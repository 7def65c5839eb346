"""`liftloop events ingest` shows its progress on stderr; with `--json` stdout still holds its
one JSON object."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from liftloop.cli.cdp import ingest_file, register
from liftloop.db import make_engine
from liftloop.settings import get_settings
from tools.cdp.contracts import ContractRegistry
from tools.cdp.ingest import IngestResult
from tools.cdp.tables import ensure_cdp_tables


def _events(path: Path, m: Any, n: int) -> Path:
    lines = [
        json.dumps(m.order(f"o{i}", f"u{i}", 10.0 + i, "2026-01-10T00:00:00Z")) for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_json_stays_on_stdout_and_progress_goes_to_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, m: Any
) -> None:
    monkeypatch.setenv("LIFTLOOP_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.sqlite'}")
    monkeypatch.setenv("LIFTLOOP_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    app = typer.Typer()
    register(app)
    try:
        events = _events(tmp_path / "events.jsonl", m, 5)
        result = CliRunner().invoke(app, ["events", "ingest", str(events), "--json"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    assert json.loads(line) == {"accepted": 5, "duplicates": 0, "quarantined": 0}
    assert "ingesting events.jsonl: 5 accepted" in result.stderr
    assert "100%" in result.stderr


def test_the_callback_follows_each_batch(tmp_path: Path, m: Any) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'cdp.sqlite'}")
    ensure_cdp_tables(engine)
    events = _events(tmp_path / "events.jsonl", m, 5)
    seen: list[tuple[int, IngestResult]] = []
    total = ingest_file(
        engine,
        events,
        source="file",
        registry=ContractRegistry.load(),
        batch_size=2,
        on_batch=lambda read, so_far: seen.append((read, so_far)),
    )
    assert [s.accepted for _, s in seen] == [2, 4, 5]  # batches of 2, 2 and 1
    reads = [read for read, _ in seen]
    assert reads == sorted(reads) and reads[-1] == events.stat().st_size
    assert seen[-1][1] == total
