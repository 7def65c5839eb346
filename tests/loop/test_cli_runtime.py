"""The README's main command for real: `liftloop demo` starts the embedded runtime (dev server
on SQLite, SMTP server, worker, API), runs the loop and reports; `status` and `down` manage it."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from email.parser import BytesParser
from email.policy import default
from pathlib import Path
from typing import Any

import httpx

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
    env["LIFTLOOP_PROVENANCE_URL"] = (
        f"http://127.0.0.1:{ports['API_PORT']}/v1/messages/{{message_id}}/provenance"
    )
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

        _check_audit_log(report, env, tmp_path / "data")

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


def _check_audit_log(report: dict[str, Any], env: dict[str, str], data: Path) -> None:
    """The demo's campaign as an auditor reads it, from the CLI and the API."""
    verified = _run(["audit", "verify", "--json"], env)
    assert verified.returncode == 0, verified.stdout + verified.stderr[-2000:]
    assert json.loads(verified.stdout)["ok"] is True
    shown = _run(["audit", "show", "--campaign", report["campaign_id"], "--json"], env)
    entries = json.loads(shown.stdout)["entries"]
    kinds = [e["kind"] for e in entries]
    assert kinds[0] == "campaign.start" and entries[0]["actor"] == "demo-manager"
    assert entries[0]["details"]["spec"]["id"] == report["campaign_id"]
    decided = [e for e in entries if e["kind"] == "approval.decide"]
    assert len(decided) == kinds.count("approval.request") == 4
    assert {e["actor"] for e in decided} == {"demo-approver"}
    assert {e["details"]["verdict"] for e in decided} == {"approved"}
    batches = [e["details"] for e in entries if e["kind"] == "send.batch"]
    assert len(batches) == 2 * 4  # cycles x shards
    assert sum(b["sent"] for b in batches) == report["sent"]
    assert {"guard.verdict", "policy.in_force", "prompt.in_use"} <= set(kinds)

    key = (data / "secrets" / "api-key").read_text().strip()
    api = f"http://127.0.0.1:{env['LIFTLOOP_API_PORT']}"
    headers = {"X-API-Key": key}
    assert httpx.get(f"{api}/v1/audit/verify", headers=headers).json()["ok"] is True
    csv = httpx.get(
        f"{api}/v1/audit",
        params={"campaign_id": report["campaign_id"], "format": "csv"},
        headers=headers,
    )
    assert csv.headers["content-type"].startswith("text/csv")
    assert len(csv.text.splitlines()) == len(entries) + 1
    bad = httpx.get(f"{api}/v1/audit", params={"campaign_id": "Not Valid"}, headers=headers)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "campaign_id"
    _check_provenance(report, env, data, headers)
    fair = json.loads(_run(["campaign", "fairness", report["campaign_id"], "--json"], env).stdout)
    by_segment = [c for c in fair["checks"] if c["attribute"] == "segment"]
    assert {c["cycle"] for c in by_segment} == {1, 2}
    assert {"mens", "womens"} <= set(by_segment[0]["rates"])
    served = httpx.get(f"{api}/v1/campaigns/{report['campaign_id']}/fairness", headers=headers)
    assert served.json() == fair["checks"]
    flagged = [c for c in fair["checks"] if c["flagged"]]
    assert len([e for e in entries if e["kind"] == "fairness.flagged"]) == len(
        {c["cycle"] for c in flagged}
    )
    # Pseudonymous ids only: no address of a person in the log.
    exported = _run(["audit", "export", "--format", "json"], env).stdout
    assert "@customers.example" not in exported and "device:" not in exported
    for log in (data / "logs").iterdir():  # nor in any service's log
        assert "@customers.example" not in log.read_text(errors="replace"), log.name


def _check_provenance(
    report: dict[str, Any], env: dict[str, str], data: Path, headers: dict[str, str]
) -> None:
    """A delivered mail names its provenance; following it leads to the decision, the variant,
    the policy and the approver behind it, by the API and the CLI alike."""
    with sqlite3.connect(data / "smtp" / "mailbox.sqlite") as mailbox:
        raw = mailbox.execute(
            "SELECT raw FROM messages WHERE campaign_id = ? LIMIT 1", (report["campaign_id"],)
        ).fetchone()[0]
    mail = BytesParser(policy=default).parsebytes(raw)
    url = str(mail["X-Liftloop-Provenance"])
    found = httpx.get(url, headers=headers)
    assert found.status_code == 200, found.text
    prov = found.json()
    assert prov["message_id"] in str(mail["Message-ID"]) and prov["status"] == "sent"
    assert prov["campaign_id"] == report["campaign_id"] and "@" not in prov["profile_id"]
    assert 0 < prov["decision"]["propensity"] <= 1 and not prov["decision"]["holdout"]
    assert prov["decision"]["arm"] == prov["variant"]["variant_id"].rsplit(":", 1)[1]
    assert prov["variant"]["policy_version"] and prov["variant"]["template_version"]
    if prov["variant"]["verdict"] == "escalate":
        assert prov["approval"]["decided_by"] == "demo-approver"
    cli = _run(["audit", "message", prov["message_id"], "--json"], env)
    assert json.loads(cli.stdout) == prov
    missing = httpx.get(url.replace(prov["message_id"], "no-such-message"), headers=headers)
    assert missing.status_code == 404 and missing.json()["errors"][0]["field"] == "message_id"


def test_invalid_spec_is_refused_before_anything_starts(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("id: Not Valid\nchannels: [fax]\noffers:\n  - {id: a, discount_pct: 120}\n")
    result = _run(["campaign", "start", str(spec)], _env(tmp_path / "data"))
    assert result.returncode == 2
    for field in ("id", "channels.0", "offers.0.discount_pct"):
        assert field in result.stderr
    assert not (tmp_path / "data" / "run").exists()
