"""`liftloop audit verify|show|export|checkpoint` on an installation's own log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from liftloop.audit import audit_log
from liftloop.cli import app
from liftloop.settings import Settings, get_settings
from tools.audit import AuditEvent, AuditLog


@pytest.fixture
def log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AuditLog]:
    monkeypatch.setenv("LIFTLOOP_DATA_DIR", str(tmp_path / "data"))
    for name in ("LIFTLOOP_DATABASE_URL", "LIFTLOOP_AUDIT_SIGNING_KEY"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    log = audit_log(Settings())
    log.append(AuditEvent(kind="campaign.start", actor="cli:ann", campaign_id="spring"))
    for shard in range(3):
        log.append(
            AuditEvent(
                kind="send.batch", actor="worker", campaign_id="spring", details={"shard": shard}
            )
        )
    log.append(AuditEvent(kind="campaign.start", actor="api", campaign_id="autumn"))
    yield log
    get_settings.cache_clear()


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), prog_name="liftloop")


def test_verify_passes_then_names_the_altered_entry(log: AuditLog) -> None:
    ok = _cli("audit", "verify", "--json")
    assert ok.exit_code == 0 and json.loads(ok.stdout)["entries"] == 5
    with log.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET actor = 'mallory' WHERE seq = 3"))
    bad = _cli("audit", "verify", "--json")
    assert bad.exit_code == 1
    report = json.loads(bad.stdout)
    assert (report["ok"], report["first_bad"]) == (False, 3)
    assert report["reason"].startswith("altered")
    assert "NOT OK at entry 3" in _cli("audit", "verify").stdout


def test_show_is_one_campaigns_timeline(log: AuditLog) -> None:
    shown = _cli("audit", "show", "--campaign", "spring", "--json")
    assert shown.exit_code == 0
    entries = json.loads(shown.stdout)["entries"]
    assert [e["kind"] for e in entries] == ["campaign.start"] + ["send.batch"] * 3
    assert "cli:ann" in _cli("audit", "show", "--campaign", "spring").stdout
    newest = json.loads(_cli("audit", "show", "--limit", "1", "--json").stdout)["entries"]
    assert [e["campaign_id"] for e in newest] == ["autumn"]


def test_show_refuses_an_unknown_or_malformed_campaign(log: AuditLog) -> None:
    unknown = _cli("audit", "show", "--campaign", "winter")
    assert unknown.exit_code == 2 and "no audit entries for campaign winter" in unknown.stderr
    malformed = _cli("audit", "show", "--campaign", "../etc")
    assert malformed.exit_code == 2 and "--campaign" in malformed.stderr


def test_export_checkpoints_the_head_and_writes_csv(log: AuditLog, tmp_path: Path) -> None:
    target = tmp_path / "audit.csv"
    done = _cli("audit", "export", "--format", "csv", "--campaign", "spring", "-o", str(target))
    assert done.exit_code == 0, done.stderr
    assert len(target.read_text().splitlines()) == 1 + 4
    report = json.loads(_cli("audit", "verify", "--json").stdout)
    assert report["ok"] and report["checkpoints"] == 1
    as_json = json.loads(_cli("audit", "export").stdout)
    assert len(as_json) == 5
    assert "checkpoint at entry 5" in _cli("audit", "checkpoint").stdout
