"""Recovery of the embedded runtime: `liftloop demo` survives a restart of Temporal's dev server
in the middle of its campaign (its waits reconnect) and still prints its report; the send
activity heartbeats before its heartbeat timeout runs out; the reliability benchmark runs at its
quick size. (A worker killed mid-send: tests/loop/test_durability.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from temporalio.testing import ActivityEnvironment

from connectors.ports import OutboundMessage, SendOutcome
from liftloop import runtime
from liftloop.loop.payloads import CycleRef, SendInput
from liftloop.settings import Settings
from tests.loop.test_cli_runtime import LIFTLOOP, _env, _run
from tests.stages.helpers import (
    BATCH,
    RecordingSender,
    make_spec,
    run_decide,
    run_generate,
    run_segment,
    send_stage,
)
from tools.simulation.customers import generate_customers
from workflows import campaign_loop

ROOT = Path(__file__).resolve().parents[2]
OUTAGE_S = 15.0


def _settings(env: dict[str, str]) -> Settings:
    """The settings the demo's processes read from `env`, for the runtime's process control."""
    return Settings(
        data_dir=Path(env["LIFTLOOP_DATA_DIR"]),
        temporal_port=int(env["LIFTLOOP_TEMPORAL_PORT"]),
        temporal_http_port=int(env["LIFTLOOP_TEMPORAL_HTTP_PORT"]),
        temporal_metrics_port=int(env["LIFTLOOP_TEMPORAL_METRICS_PORT"]),
        temporal_ui_port=int(env["LIFTLOOP_TEMPORAL_UI_PORT"]),
        api_port=int(env["LIFTLOOP_API_PORT"]),
        smtp_port=int(env["LIFTLOOP_SMTP_PORT"]),
    )


def test_demo_survives_a_dev_server_restart_and_prints_its_report(tmp_path: Path) -> None:
    env = _env(tmp_path / "data")
    settings = _settings(env)
    demo = subprocess.Popen(
        [*LIFTLOOP, "demo", "--profiles", "3000", "--cycles", "2", "--approve-all", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    progress: list[str] = []
    reader = threading.Thread(target=lambda: progress.extend(demo.stderr or []), daemon=True)
    reader.start()
    try:
        # Restart once the first cycle is under way: the demo then waits on the workflow.
        deadline = time.monotonic() + 240
        while not any("cycle 1: send" in line or "cycle 1: simulate" in line for line in progress):
            assert demo.poll() is None, "".join(progress)[-2000:]
            assert time.monotonic() < deadline, "".join(progress)[-2000:]
            time.sleep(0.1)
        # Down longer than the Temporal client's own retries last (about 10 s).
        away = runtime.restart_service(settings, "temporal", down_s=OUTAGE_S)
        out, _ = demo.communicate(timeout=300)
        reader.join(timeout=5)
        assert demo.returncode == 0, "".join(progress)[-3000:]
        assert "Traceback" not in "".join(progress), "".join(progress)[-3000:]
        assert len(out.strip().splitlines()) == 1, out[-2000:]  # one JSON object, no noise
        report = json.loads(out)
        assert report["outcome"] == "completed" and report["cycles"] == 2
        assert report["profiles"] == 3000
        assert report["duplicates"] == 0 and report["delivery"]["missing"] == 0
        assert report["sent"] == report["delivery"]["outbox_sent"] > 0
        assert away >= OUTAGE_S
        print(f"dev server away {away:.1f} s; demo completed")
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        _run(["down"], env)


def test_the_send_activity_heartbeats_before_its_first_provider_call(engine: Engine) -> None:
    generate_customers(engine, 300, batch=BATCH, seed=5)
    spec = make_spec(channels=["email"])
    ref = CycleRef(
        campaign_id=spec.id,
        workflow_id=f"campaign-{spec.id}",
        cycle=1,
        spec=spec,
        started_at=datetime.now(UTC),
        attribution_window_s=3600.0,
        shards=1,
    )
    env = ActivityEnvironment()
    run_segment(env, engine, ref)
    run_decide(env, engine, ref)
    approved = [v for v in run_generate(env, engine, ref).variant_ids if "twenty_off" not in v]
    events: list[str] = []

    class Traced(RecordingSender):
        def send(self, messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
            events.append("provider call")
            return super().send(messages)

    env.on_heartbeat = lambda *_: events.append("heartbeat")
    env.run(
        send_stage(engine, {"email": Traced()}).send,
        SendInput(ref=ref, shard=0, variant_ids=approved),
    )
    assert campaign_loop._SEND.get("heartbeat_timeout") == timedelta(seconds=10)
    assert "provider call" in events
    assert events[0] == "heartbeat", events[:3]


@pytest.mark.timeout(240)
def test_reliability_benchmark_quick_prints_its_figures(tmp_path: Path) -> None:
    """A smoke test of `bench/reliability.py --quick` (about two minutes): it exits 0 and prints
    every figure line. No figure is judged here; docs/benchmarks.md has the full run's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFTLOOP_")}
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "reliability.py"),
            "--quick",
            "--work",
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=230,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for figure in (
        "chaos: profiles",
        "chaos: kills",
        "chaos: at the sink",
        "chaos: duplicates",
        "chaos: missing",
        "chaos: outbox",
        "chaos: wall time",
        "load: requests",
        "load: throughput",
        "load: latency",
        "load: errors",
        "load: events",
        "fuzz: examples",
        "fuzz: failures",
    ):
        assert figure in result.stdout, (figure, result.stdout[-3000:])
