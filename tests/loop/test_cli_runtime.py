"""The README's main command for real: `liftloop demo` starts the embedded runtime (dev server
on SQLite, SMTP server, worker, API), runs the loop and reports; `status` and `down` manage it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.loop.conftest import free_port

LIFTLOOP = [sys.executable, "-m", "liftloop.cli"]


def _env(data_dir: Path) -> dict[str, str]:
    ports = {
        name: str(free_port())
        for name in (
            "TEMPORAL_PORT",
            "TEMPORAL_HTTP_PORT",
            "TEMPORAL_METRICS_PORT",
            "TEMPORAL_UI_PORT",
            "API_PORT",
            "SMTP_PORT",
        )
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFTLOOP_")}
    env.update({f"LIFTLOOP_{k}": v for k, v in ports.items()})
    env.update({"LIFTLOOP_DATA_DIR": str(data_dir), "LIFTLOOP_ATTRIBUTION_WINDOW_OVERRIDE_S": "2"})
    return env


def _run(
    args: list[str], env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LIFTLOOP, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_demo_up_status_down(tmp_path: Path) -> None:
    env = _env(tmp_path / "data")
    try:
        demo = _run(["demo", "--profiles", "1500", "--cycles", "2", "--approve-all", "--json"], env)
        assert demo.returncode == 0, demo.stderr[-2000:]
        report = json.loads(demo.stdout)
        for key in (
            "profiles",
            "cycles",
            "sent",
            "held_out",
            "duplicates",
            "lift",
            "true_lift",
            "trace_id",
        ):
            assert key in report
        assert report["profiles"] == 1500 and report["cycles"] == 2
        assert report["duplicates"] == 0 and report["delivery"]["missing"] == 0
        assert report["sent"] == report["delivery"]["outbox_sent"] > 0
        assert report["approvals"] == {"requested": 4, "approved": 4}
        assert set(report["lift"]) >= {"estimate", "ci_low", "ci_high"}
        assert report["true_lift"] > 0
        assert f"workflows/campaign-{report['campaign_id']}" in report["temporal_ui"]

        status = json.loads(_run(["status", "--json"], env).stdout)
        assert all(status[s]["running"] for s in ("temporal", "smtp", "worker", "api"))

        restarted = _run(["restart", "worker"], env)
        assert restarted.returncode == 0, restarted.stderr[-2000:]
        after = json.loads(_run(["status", "--json"], env).stdout)
        assert after["worker"]["running"] and after["worker"]["pid"] != status["worker"]["pid"]

        spans = (tmp_path / "data" / "traces" / "spans.jsonl").read_text()
        assert report["trace_id"] in spans
        names = {json.loads(line)["name"] for line in spans.splitlines()}
        assert {
            "stage.segment",
            "stage.decide",
            "stage.guard",
            "stage.send",
            "stage.measure",
        } <= names
        # Personal data never reaches a span.
        assert "@customers.example" not in spans and "device:" not in spans
    finally:
        down = _run(["down"], env)
    assert down.returncode == 0
    status = json.loads(_run(["status", "--json"], env).stdout)
    assert not any(s["running"] for s in status.values())


def test_invalid_spec_is_refused_before_anything_starts(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("id: Not Valid\nchannels: [fax]\noffers:\n  - {id: a, discount_pct: 120}\n")
    result = _run(["campaign", "start", str(spec)], _env(tmp_path / "data"))
    assert result.returncode == 2
    for field in ("id", "channels.0", "offers.0.discount_pct"):
        assert field in result.stderr
    assert not (tmp_path / "data" / "run").exists()
