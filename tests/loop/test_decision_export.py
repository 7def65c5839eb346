"""`liftloop campaign decisions`: the decision log as bandit feedback that `liftloop ope` reads."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert
from typer.testing import CliRunner

from liftloop.cli import app
from liftloop.db import engine_for
from liftloop.loop.tables import DecisionRecord
from liftloop.settings import get_settings
from tools.models.ope import read_decision_log


def _decision(pid: str, arm: str, propensity: float, margin: float | None) -> dict[str, object]:
    return {
        "campaign_id": "c1",
        "cycle": 1,
        "profile_id": pid,
        "shard": 0,
        "segment": "mens" if pid < "p5" else "both",
        "holdout": arm == "holdout",
        "arm": arm,
        "offer_id": "",
        "channel": "",
        "propensity": propensity,
        "policy": "nba",
        "decided_at": datetime.now(UTC),
        "outcome_orders": None if margin is None else int(margin > 0),
        "outcome_margin": margin,
    }


def test_export_writes_rounds_ope_can_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFTLOOP_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    try:
        engine = engine_for(get_settings().cdp_url)
        with engine.begin() as conn:
            conn.execute(
                insert(DecisionRecord),
                [
                    _decision("p1", "holdout", 0.1, 0.0),
                    _decision("p2", "none", 0.3, 12.5),
                    _decision("p6", "ten_off@email", 0.45, 0.0),
                    _decision("p7", "content@email", 0.2, None),  # window not over yet
                ],
            )
        out = tmp_path / "rounds.jsonl"
        result = CliRunner().invoke(
            app, ["campaign", "decisions", "c1", "--out", str(out), "--json"]
        )
        missing = CliRunner().invoke(app, ["campaign", "decisions", "nope", "--out", str(out)])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.stdout
    summary = json.loads(result.stdout)
    assert summary["rounds"] == 3 and summary["unmeasured"] == 1
    assert summary["arms"] == ["holdout", "none", "ten_off@email"]
    assert summary["segments"] == ["both", "mens"]
    log = read_decision_log(out)
    assert log.actions.tolist() == [0, 1, 2]
    assert log.contexts.tolist() == [1, 1, 0]
    assert log.propensities.tolist() == [0.1, 0.3, 0.45]
    assert log.rewards.tolist() == [0.0, 12.5, 0.0]
    assert missing.exit_code != 0 and "no measured decisions" in missing.output
