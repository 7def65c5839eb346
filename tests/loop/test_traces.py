"""Traces that tell one story: a campaign started from the CLI (another process, as an operator
starts it), run by a worker that traces as `liftloop up`'s does, leaves one trace per cycle, each
linked to the one before; its spans say per approval request who decided (by pseudonym) and
what, per variant the guard's final verdict, and what the workflow did after measuring; and
`liftloop traces show` prints it."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import yaml
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from liftloop.cli import app
from liftloop.credentials import approval_signing_key
from liftloop.loop.approvals import approver_id, sign_decision
from liftloop.settings import Settings, get_settings
from liftloop.telemetry import spans_path
from liftloop.temporal import build_worker, connect
from tests.spans import named, record_spans, spans_in, trace_of
from tools.simulation.customers import generate_customers
from workflows.campaign_loop import CampaignLoopOutput, CampaignLoopWorkflow

# Approvers are free text: a name, an address. Neither may reach a span.
APPROVER = "Erika Mustermann"
REJECTER = "erika.mustermann@example.org"


def _spec_file(path: Path, campaign_id: str, batch: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "id": campaign_id,
                "audience": {"segment": {"all": [{"trait": "source_batch", "eq": batch}]}},
                "channels": ["email", "push"],
                "offers": [
                    {"id": "content"},
                    {"id": "ten_off", "discount_pct": 10},
                    {"id": "twenty_off", "discount_pct": 20},  # above the limit: escalated
                ],
                "limits": {"max_discount_pct": 15},
                "cadence": {"every": "0s", "max_cycles": 3},
                "stop": {"ship_when": "never", "min_cycles": 3},
                "content": {"market": "US", "brand": "demo"},
                "simulation": {"enabled": True},
            }
        ),
        encoding="utf-8",
    )
    return path


async def _cli_start(spec: Path, settings: Settings, target: str) -> dict[str, Any]:
    """`liftloop campaign start` in a process of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFTLOOP_")}
    env.update(
        {
            "LIFTLOOP_DATA_DIR": str(settings.data_dir),
            "LIFTLOOP_TEMPORAL_ADDRESS": target,
            "LIFTLOOP_TASK_QUEUE": settings.task_queue,
            "LIFTLOOP_SHARDS": "2",
            # Long enough to stop the second cycle while it waits, before it measures.
            "LIFTLOOP_ATTRIBUTION_WINDOW_OVERRIDE_S": "3",
        }
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "liftloop.cli",
        "campaign",
        "start",
        str(spec),
        "--json",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    started: dict[str, Any] = json.loads(out)
    return started


async def _drive(env: WorkflowEnvironment, workflow_id: str, key: bytes) -> CampaignLoopOutput:
    """Cycle 1: approve the e-mail variant, reject the push one; cycle 2: approve both, then
    stop the campaign while it sends or waits for the attribution window (so it still measures).
    Through an untraced client: the test's own calls are no part of the story."""
    handle = env.client.get_workflow_handle_for(CampaignLoopWorkflow.run, workflow_id)
    result = asyncio.ensure_future(handle.result())
    answered: set[str] = set()
    stopped = False
    while not result.done():
        status = await handle.query(CampaignLoopWorkflow.status)
        for p in status.pending_approvals:
            if p.request_id not in answered:
                answered.add(p.request_id)
                approved = status.cycle == 2 or p.arm.endswith("@email")
                decision = sign_decision(
                    key, p.request_id, approved, APPROVER if approved else REJECTER
                )
                await handle.execute_update(CampaignLoopWorkflow.decide_approval, decision)
        sending = status.stage in ("send", "simulate", "attribution_wait")
        if status.cycle == 2 and sending and not stopped:
            await handle.signal(CampaignLoopWorkflow.stop)
            stopped = True
        await asyncio.wait({result}, timeout=0.1)
    return result.result()


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), prog_name="liftloop")


async def test_a_cli_started_campaign_tells_one_story_per_cycle(  # type: ignore[no-untyped-def]
    dev_env, settings, engine, smtp, task_queue, tmp_path, monkeypatch
) -> None:
    target = dev_env.client.service_client.config.target_host
    settings = settings.model_copy(update={"temporal_address": target, "task_queue": task_queue})
    batch = f"b{uuid.uuid4().hex[:8]}"
    campaign_id = f"c-{batch}"
    generate_customers(engine, 400, batch=batch, seed=11)
    path = spans_path(settings)
    with record_spans(path):
        client = await connect(settings)  # the worker's client, traced as in `liftloop up`
        async with build_worker(client, settings, task_queue=task_queue):
            started = await _cli_start(
                _spec_file(tmp_path / "spec.yaml", campaign_id, batch), settings, target
            )
            out = await asyncio.wait_for(
                _drive(dev_env, started["workflow_id"], approval_signing_key(settings)), 120
            )
    assert (out.outcome, out.cycles) == ("stopped", 2)

    spans = spans_in(path)
    text = path.read_text("utf-8")
    # No approver, by name or address, anywhere in the span file.
    assert "mustermann" not in text.lower() and "erika" not in text.lower()

    # One trace per cycle: every stage span of a cycle in its trace, rooted at the CLI's start
    # (cycle 1, written by the CLI process) or at the cycle's root, linked to the one before.
    stage_traces = {
        c: {
            trace_of(s)
            for s in spans
            if s["name"].startswith("stage.") and s["attributes"].get("liftloop.cycle") == c
        }
        for c in (1, 2)
    }
    assert all(len(t) == 1 for t in stage_traces.values()), stage_traces
    first, second = stage_traces[1].pop(), stage_traces[2].pop()
    assert first != second and started["trace_id"] == first  # as `campaign start` prints it
    (start,) = named(spans, "campaign.start", liftloop__campaign_id=campaign_id)
    assert trace_of(start) == first and start["parent_id"] is None
    assert start["resource"]["attributes"]["liftloop.component"] == "cli"
    (root,) = named(spans, "campaign.cycle", liftloop__campaign_id=campaign_id)
    assert trace_of(root) == second and root["parent_id"] is None
    assert root["attributes"]["liftloop.cycle"] == 2
    assert root["attributes"]["liftloop.previous_trace_id"] == first
    assert [trace_of(link) for link in root["links"]] == [first]
    (marker,) = named(spans, "ContinueAsNew:CampaignLoopWorkflow")
    assert trace_of(marker) == first and marker["attributes"]["liftloop.next_trace_id"] == second
    for trace_id in (first, second):
        mine = [s for s in spans if trace_of(s) == trace_id]
        ids = {s["context"]["span_id"] for s in mine}
        # A single tree: every span but the root has its parent in the trace.
        assert sum(s["parent_id"] not in ids for s in mine) == 1, trace_id

    # Guard: the variant above the campaign's limit says escalate (the brand policy allowed it).
    (guard,) = named(spans, "stage.guard", liftloop__campaign_id=campaign_id, liftloop__cycle=1)
    assert "twenty_off@email=escalate" in guard["attributes"]["liftloop.verdicts"]
    assert "content@email=allow" in guard["attributes"]["liftloop.verdicts"]
    events = {e["attributes"]["liftloop.arm"]: e["attributes"] for e in guard["events"]}
    assert events["twenty_off@push"]["liftloop.guard.decision"] == "escalate"
    assert events["twenty_off@push"]["liftloop.guard.policy_decision"] == "allow"
    assert "campaign.max_discount" in events["twenty_off@push"]["liftloop.rule_ids"]

    # Approvals: per request its id, the approver's pseudonym and the verdict.
    key = approval_signing_key(settings)
    (opened,) = named(spans, "stage.approval.open", liftloop__cycle=1)
    requests = opened["attributes"]["liftloop.approval.request_ids"]
    assert (
        len(requests) == 2 and [e["name"] for e in opened["events"]] == ["approval.requested"] * 2
    )
    (closed,) = named(spans, "stage.approval.close", liftloop__cycle=1)
    decided = {
        e["attributes"]["liftloop.approval.request_id"]: e["attributes"] for e in closed["events"]
    }
    assert set(decided) == set(requests)
    by_verdict = {a["liftloop.approval.verdict"]: a for a in decided.values()}
    assert by_verdict["approved"]["liftloop.approval.approver_id"] == approver_id(key, APPROVER)
    assert by_verdict["rejected"]["liftloop.approval.approver_id"] == approver_id(key, REJECTER)
    assert (
        closed["attributes"]["liftloop.approved"],
        closed["attributes"]["liftloop.rejected"],
    ) == (
        1,
        1,
    )
    verified = [s for s in named(spans, "approval.verify") if trace_of(s) == first]
    assert {s["attributes"]["liftloop.approval.request_id"] for s in verified} == set(requests)
    assert {s["attributes"]["liftloop.approval.proof"] for s in verified} == {"valid"}

    # Measure: cycle 1 went on; the stopped cycle 2 says stop, and why, beside the rule's view.
    (m1,) = named(spans, "stage.measure", liftloop__campaign_id=campaign_id, liftloop__cycle=1)
    assert (m1["attributes"]["liftloop.decision"], m1["attributes"]["liftloop.outcome"]) == (
        "continue",
        "running",
    )
    (m2,) = named(spans, "stage.measure", liftloop__campaign_id=campaign_id, liftloop__cycle=2)
    assert m2["attributes"]["liftloop.decision"] == "stop"
    assert m2["attributes"]["liftloop.decision_reason"] == "stop_requested"
    assert m2["attributes"]["liftloop.outcome"] == "stopped"
    assert m2["attributes"]["liftloop.stop_rule.recommendation"] == "continue"

    # `liftloop traces show`: the tree of the first cycle, and errors in one line.
    monkeypatch.setenv("LIFTLOOP_DATA_DIR", str(settings.data_dir))
    get_settings.cache_clear()
    try:
        shown = _cli("traces", "show", first)
        assert shown.exit_code == 0, shown.output
        lines = shown.stdout.splitlines()
        assert lines[0].startswith(f"trace {first}: ")
        assert lines[1].startswith("campaign.start  ") and " ms  " in lines[1]
        depth = {ln.strip().split("  ")[0]: len(ln) - len(ln.lstrip()) for ln in lines[1:]}
        assert depth["stage.guard"] > depth["StartWorkflow:CampaignLoopWorkflow"] > 0
        assert any("• approval.decided" in ln and "verdict=approved" in ln for ln in lines)
        assert any("• guard.verdict" in ln and "decision=escalate" in ln for ln in lines)
        assert lines[-1] == f"linked from trace {second} (campaign.cycle)"

        as_json = json.loads(_cli("traces", "show", second, "--json").stdout)
        assert as_json["span_count"] == sum(trace_of(s) == second for s in spans)
        assert [r["name"] for r in as_json["spans"]] == ["campaign.cycle"]

        listed = json.loads(_cli("traces", "list", "--campaign", campaign_id, "--json").stdout)
        assert [(t["trace_id"], t["root"], t["cycle"]) for t in listed["traces"]] == [
            (second, "campaign.cycle", 2),
            (first, "campaign.start", 1),
        ]

        unknown = _cli("traces", "show", "0" * 32)
        assert unknown.exit_code == 2 and unknown.stdout == ""
        assert unknown.stderr == f"error: trace_id: no trace {'0' * 32} in {path}\n"
    finally:
        get_settings.cache_clear()
