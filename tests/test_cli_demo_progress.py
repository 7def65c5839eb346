"""`liftloop demo` shows its cycles as progress on stderr; with `--json` stdout holds the
report alone. The runtime and the loop are stand-ins here (tests/loop/test_cli_runtime.py runs
the real demo)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from liftloop.cli import app
from liftloop.demo import DemoReport
from liftloop.loop.delivery_audit import DeliveryAudit
from liftloop.report import PooledLift
from workflows.campaign_loop import CampaignStatus, PendingApproval


def _report() -> DemoReport:
    lift = PooledLift(metric="conversion", estimate=0.004, ci_low=0.002, ci_high=0.006, cycles=2)
    return DemoReport(
        campaign_id="demo-1",
        outcome="completed",
        profiles=100,
        cycles=2,
        audience=90,
        sent=80,
        held_out=10,
        failed=0,
        suppressed=0,
        approvals={"requested": 1, "approved": 0},
        duplicates=0,
        delivery=DeliveryAudit(
            outbox_sent=80,
            outbox_failed=0,
            outbox_suppressed=0,
            delivered=80,
            duplicates=0,
            missing=0,
            redeliveries_refused=0,
        ),
        primary_metric="conversion",
        lift=lift,
        true_lift=0.004,
        lifts={"conversion": lift.model_copy(update={"true_lift": 0.004})},
        temporal_ui="http://127.0.0.1:8233/",
        trace_id="0" * 32,
    )


def _status(cycle: int, stage: Any, done: int, pending: list[PendingApproval]) -> CampaignStatus:
    # Only how many cycles ended counts here, not their results.
    history: list[Any] = [None] * done
    return CampaignStatus.model_construct(
        campaign_id="demo-1",
        cycle=cycle,
        stage=stage,
        paused=False,
        stop_requested=False,
        outcome="running",
        pending_approvals=pending,
        history=history,
    )


@pytest.fixture
def demo_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    async def connect(settings: Any, *, as_json: bool = False) -> object:
        return object()

    async def run_demo(client: Any, settings: Any, **kw: Any) -> DemoReport:
        kw["on_step"]("seeding 100 profiles")
        pending = [PendingApproval(request_id="apr-1", variant_id="v", arm="a", reasons=["r"])]
        for cycle in (1, 2):
            calls.append(f"cycle {cycle}")
            kw["on_status"](_status(cycle, "send", cycle - 1, pending if cycle == 1 else []))
        return _report()

    monkeypatch.setattr("liftloop.runtime.up", lambda settings: [])
    monkeypatch.setattr("liftloop.telemetry.setup_tracing", lambda settings, name: None)
    monkeypatch.setattr("liftloop.telemetry.flush_tracing", lambda: None)
    monkeypatch.setattr("liftloop.cli.client.connect", connect)
    monkeypatch.setattr("liftloop.demo.run_demo", run_demo)
    return calls


def test_json_stays_on_stdout_and_progress_goes_to_stderr(demo_calls: list[str]) -> None:
    result = CliRunner().invoke(app, ["demo", "--profiles", "100", "--cycles", "2", "--json"])
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    assert json.loads(line) == _report().model_dump(mode="json")
    assert demo_calls == ["cycle 1", "cycle 2"]
    # The stages and escalations as lines, and the bar's last state.
    assert "demo-1 cycle 1: send" in result.stderr
    assert "demo-1 cycle 2: send" in result.stderr
    assert "approval pending apr-1: r" in result.stderr
    assert "2 cycles: completed" in result.stderr and "100%" in result.stderr


def test_without_json_the_report_alone_is_on_stdout(demo_calls: list[str]) -> None:
    result = CliRunner().invoke(app, ["demo", "--profiles", "100", "--cycles", "2"])
    assert result.exit_code == 0, result.output
    assert "campaign demo-1: completed" in result.stdout
    assert "approval pending" not in result.stdout and "━" not in result.stdout
    assert "demo-1 cycle 1: send" in result.stderr and "100%" in result.stderr
