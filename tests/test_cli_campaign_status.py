"""`liftloop campaign status` of a stopped campaign: a cycle without a lift interval (too few
people in a group) or without any lift prints "—" instead of crashing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from liftloop.cli import app
from liftloop.cli.campaign import NO_VALUE, status_lines
from tools.measure.lift import LiftEstimate
from workflows.campaign_loop import CampaignStatus, CycleSummary

runner = CliRunner()


def _lift(ci: tuple[float, float] | None) -> LiftEstimate:
    return LiftEstimate(
        metric="conversion",
        treated_n=40 if ci else 1,
        control_n=4 if ci else 1,
        treated_mean=0.05,
        control_mean=0.025,
        estimate=0.025,
        ci_low=ci[0] if ci else None,
        ci_high=ci[1] if ci else None,
        p_value=0.2 if ci else None,
    )


def _cycle(n: int, lifts: dict[str, LiftEstimate]) -> CycleSummary:
    return CycleSummary(
        cycle=n,
        audience=45,
        sent=40,
        failed=0,
        suppressed=0,
        held_out=4,
        approvals_requested=0,
        approvals_approved=0,
        lifts=lifts,
    )


STOPPED = CampaignStatus(
    campaign_id="c-stopped",
    cycle=3,
    stage="done",
    paused=False,
    stop_requested=True,
    outcome="stopped",
    pending_approvals=[],
    history=[
        _cycle(1, {"conversion": _lift((-0.01, 0.06))}),
        _cycle(2, {"conversion": _lift(None)}),  # stopped with one person held out
        _cycle(3, {}),
    ],
    reason="stopped by cli:someone",
)


def test_a_cycle_without_interval_shows_a_dash() -> None:
    lines = status_lines(STOPPED)
    assert lines[0] == "c-stopped: cycle 3, stage done, outcome stopped"
    assert lines[1] == "  reason: stopped by cli:someone"
    assert lines[2] == (
        "  cycle 1: sent 40, held out 4, conversion lift +0.02500 [-0.01000, +0.06000]"
    )
    assert lines[3] == (
        f"  cycle 2: sent 40, held out 4, conversion lift +0.02500 [{NO_VALUE}, {NO_VALUE}]"
    )
    assert lines[4] == f"  cycle 3: sent 40, held out 4, lift {NO_VALUE}"


@pytest.mark.parametrize("as_json", [False, True])
def test_the_command_prints_a_stopped_campaign(
    monkeypatch: pytest.MonkeyPatch, as_json: bool
) -> None:
    async def connect(settings: Any, *, as_json: bool = False) -> object:
        return object()

    async def campaign_status(client: Any, campaign_id: str) -> CampaignStatus:
        assert campaign_id == "c-stopped"
        return STOPPED

    monkeypatch.setattr("liftloop.cli.client.connect", connect)
    monkeypatch.setattr("liftloop.campaigns.campaign_status", campaign_status)
    result = runner.invoke(
        app, ["campaign", "status", "c-stopped", *(["--json"] if as_json else [])]
    )
    assert result.exit_code == 0, result.output
    if as_json:
        body = json.loads(result.stdout)
        assert body["history"][1]["lifts"]["conversion"]["ci_low"] is None
    else:
        assert result.stdout.splitlines() == status_lines(STOPPED)
