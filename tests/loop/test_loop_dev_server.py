"""The campaign loop end to end on Temporal's real dev server."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
from sqlalchemy import func, select
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment

from liftloop.campaigns import loop_input
from liftloop.loop.delivery_audit import audit_deliveries
from liftloop.loop.tables import ApprovalRequest, DecisionRecord, OutboxMessage
from liftloop.temporal import build_worker
from tests.loop.helpers import drive, spec, start
from tools.simulation.customers import generate_customers
from workflows.campaign_loop import CampaignLoopWorkflow


async def _run(
    env: WorkflowEnvironment,
    settings,
    engine,
    task_queue,
    profiles: int,  # type: ignore[no-untyped-def]
    approve: bool | None = True,
    **spec_overrides,
):  # type: ignore[no-untyped-def]
    batch = f"b{uuid.uuid4().hex[:8]}"
    generate_customers(engine, profiles, batch=batch, seed=profiles)
    s = spec(f"c-{batch}", batch, **spec_overrides)
    async with build_worker(env.client, settings, task_queue=task_queue):
        handle = await start(env.client, settings, s, task_queue)
        out = await drive(env.client, handle, approve, settings=settings)
    return s, handle, out


async def test_cycle_sends_exactly_once_and_measures(dev_env, settings, engine, smtp, task_queue):  # type: ignore[no-untyped-def]
    s, _, out = await _run(dev_env, settings, engine, task_queue, 1500)
    assert out.outcome == "completed" and out.cycles == 1
    cycle = out.history[0]
    assert cycle.approvals_requested == 2 and cycle.approvals_approved == 2  # twenty_off × 2
    assert cycle.sent > 0 and cycle.held_out > 0
    assert 0.06 < cycle.held_out / cycle.audience < 0.14
    audit = audit_deliveries(engine, settings, s.id)
    assert audit.duplicates == 0 and audit.missing == 0
    assert audit.delivered == audit.outbox_sent == cycle.sent
    with engine.connect() as conn:
        # Nobody in the holdout got a message; every treated decision has one outbox row.
        leaked = conn.execute(
            select(func.count())
            .select_from(OutboxMessage)
            .join(
                DecisionRecord,
                (DecisionRecord.profile_id == OutboxMessage.profile_id)
                & (DecisionRecord.campaign_id == OutboxMessage.campaign_id)
                & (DecisionRecord.cycle == OutboxMessage.cycle),
            )
            .where(DecisionRecord.holdout.is_(True))
        ).scalar()
        assert leaked == 0
    # Intention to treat: everyone the policy decided for, sent or suppressed, against the holdout.
    lifts = cycle.lifts["conversion"]
    assert lifts.treated_n == cycle.audience - cycle.held_out and lifts.control_n == cycle.held_out
    assert cycle.true_lift is not None and cycle.true_lift["conversion"] > 0


async def test_rejected_escalation_sends_nothing_of_that_variant(
    dev_env,
    settings,
    engine,
    smtp,  # type: ignore[no-untyped-def]
    task_queue,
):
    s, _, out = await _run(dev_env, settings, engine, task_queue, 600, approve=False)
    with engine.connect() as conn:
        rows = dict(
            conn.execute(
                select(OutboxMessage.status, func.count())
                .where(
                    OutboxMessage.campaign_id == s.id, OutboxMessage.variant_id.like("%twenty_off%")
                )  # type: ignore[attr-defined]
                .group_by(OutboxMessage.status)
            ).all()
        )
        statuses = set(
            conn.execute(
                select(ApprovalRequest.status).where(ApprovalRequest.campaign_id == s.id)
            ).scalars()
        )
    assert set(rows) == {"suppressed"} and rows["suppressed"] > 0
    assert statuses == {"rejected"}
    assert out.history[0].approvals_approved == 0


async def test_history_does_not_grow_with_the_audience(dev_env, settings, engine, smtp, task_queue):  # type: ignore[no-untyped-def]
    from temporalio.api.enums.v1 import EventType

    bookkeeping = {
        EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
        EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
        EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
    }
    counts = []
    for n in (300, 3000):
        _, handle, _ = await _run(dev_env, settings, engine, task_queue, n)
        history: WorkflowHistory = await handle.fetch_history()
        # Workflow-task events depend on how completions happen to batch; all others are the
        # cycle's own activities, timers and updates.
        counts.append(sum(e.event_type not in bookkeeping for e in history.events))
    assert counts[0] == counts[1]


async def test_pause_resume_and_stop_mid_cycle(dev_env, settings, engine, smtp, task_queue):  # type: ignore[no-untyped-def]
    batch = f"b{uuid.uuid4().hex[:8]}"
    generate_customers(engine, 800, batch=batch)
    s = spec(
        f"c-{batch}",
        batch,
        cadence={"every": "1h", "max_cycles": 5},
        stop={"ship_when": "never", "min_cycles": 1},
    )
    inp = loop_input(s, settings).model_copy(update={"paused": True})
    async with build_worker(dev_env.client, settings, task_queue=task_queue):
        handle = await dev_env.client.start_workflow(
            CampaignLoopWorkflow.run, inp, id=f"campaign-{s.id}", task_queue=task_queue
        )
        await asyncio.sleep(1.0)
        st = await handle.query(CampaignLoopWorkflow.status)
        assert st.paused and st.stage == "starting"
        with engine.connect() as conn:
            assert (
                conn.execute(
                    select(func.count())
                    .select_from(DecisionRecord)
                    .where(DecisionRecord.campaign_id == s.id)
                ).scalar()
                == 0
            )
        await handle.signal(CampaignLoopWorkflow.resume)
        # Let the first cycle send and start waiting for the next one, then stop the campaign.
        for _ in range(300):
            st = await handle.query(CampaignLoopWorkflow.status)
            for p in st.pending_approvals:
                from liftloop.credentials import approval_signing_key
                from liftloop.loop.approvals import sign_decision

                await handle.execute_update(
                    CampaignLoopWorkflow.decide_approval,
                    sign_decision(approval_signing_key(settings), p.request_id, True, "unknown"),
                )
            if st.stage == "cadence_wait":
                break
            await asyncio.sleep(0.2)
        await handle.signal(CampaignLoopWorkflow.stop)
        out = await handle.result()
    assert out.outcome == "stopped" and out.cycles == 1
    assert len(out.history) == 1 and out.history[0].sent > 0
    audit = audit_deliveries(engine, settings, s.id)
    assert audit.outbox_sent == out.history[0].sent and audit.missing == 0


async def test_copywriter_variants_are_cited_guarded_and_sent(
    dev_env,
    settings,
    engine,
    smtp,  # type: ignore[no-untyped-def]
    task_queue,
):
    from liftloop.loop.tables import Variant

    s, _, out = await _run(
        dev_env,
        settings,
        engine,
        task_queue,
        400,
        content={
            "generator": "copywriter",
            "market": "US",
            "brand": "demo",
            "template": "winback_email",
            "brief": "new season",
        },
    )
    with engine.connect() as conn:
        variants = conn.execute(
            select(
                Variant.arm,
                Variant.model,
                Variant.snapshot_id,
                Variant.citations,
                Variant.verdict,
                Variant.body,
            ).where(Variant.campaign_id == s.id)
        ).all()
    assert len(variants) == 6
    for arm, model, snapshot, citations, verdict, body in variants:
        assert model == "offline-composer" and snapshot and citations
        assert verdict in ("allow", "escalate"), (arm, verdict)
        assert "{{" not in body
    assert out.history[0].sent > 0
    audit = audit_deliveries(engine, settings, s.id)
    assert audit.duplicates == 0 and audit.missing == 0


async def test_thompson_policy_logs_propensities_and_learns(
    dev_env,
    settings,
    engine,
    smtp,  # type: ignore[no-untyped-def]
    task_queue,
):
    import json

    from liftloop.loop.tables import BanditState

    s, _, out = await _run(
        dev_env,
        settings,
        engine,
        task_queue,
        1200,
        experiment={"policy": "thompson", "holdout_pct": 10, "min_arm_share": 0.05},
        cadence={"every": "0s", "max_cycles": 2},
        stop={"ship_when": "never", "min_cycles": 2},
    )
    assert out.cycles == 2
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                DecisionRecord.cycle,
                DecisionRecord.holdout,
                DecisionRecord.propensity,
                DecisionRecord.policy,
            ).where(DecisionRecord.campaign_id == s.id)
        ).all()
        states = conn.execute(
            select(BanditState.cycle, BanditState.state)
            .where(BanditState.campaign_id == s.id)
            .order_by(BanditState.cycle)
        ).all()
    assert {r.policy for r in rows} == {"thompson"}
    treated = [r.propensity for r in rows if not r.holdout]
    # Each arm keeps at least its floor, also among the arms a person may receive.
    assert all(0.9 * 0.05 * 0.999 <= p <= 0.9 + 1e-9 for p in treated)
    assert {r.propensity for r in rows if r.holdout} == {0.1}
    assert [c for c, _ in states] == [1, 2]
    # The posteriors count each cycle's sends: cycle 2 has seen more data than cycle 1.
    seen = [sum(sum(row) for row in json.loads(st)["counts"]) for _, st in states]
    assert seen[0] == out.history[0].sent and seen[1] == seen[0] + out.history[1].sent


async def test_input_the_worker_cannot_accept_fails_the_campaign_with_its_reason(  # type: ignore[no-untyped-def]
    dev_env, settings, engine, smtp, task_queue
):
    from temporalio.client import WorkflowFailureError

    batch = f"b{uuid.uuid4().hex[:8]}"
    generate_customers(engine, 50, batch=batch)
    s = spec(f"c-{batch}", batch, content={"market": "FR", "brand": "default"})
    async with build_worker(dev_env.client, settings, task_queue=task_queue):
        handle = await start(dev_env.client, settings, s, task_queue)
        try:
            await asyncio.wait_for(handle.result(), timeout=60)
            raise AssertionError("a campaign without a policy for its market must not run")
        except WorkflowFailureError as exc:
            cause = exc.cause.cause if exc.cause is not None else None
            assert cause is not None and "market" in str(cause)
    with engine.connect() as conn:
        assert (
            conn.execute(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.campaign_id == s.id)
            ).scalar()
            == 0
        )


async def test_nba_policy_decides_by_expected_margin_and_learns(  # type: ignore[no-untyped-def]
    dev_env, settings, engine, smtp, task_queue
):
    import json

    from liftloop.loop.next_best_action import model_name
    from liftloop.loop.tables import BanditState
    from tools.cdp.people import profile_buckets
    from tools.models.registry import ModelRegistry

    s, _, out = await _run(
        dev_env,
        settings,
        engine,
        task_queue,
        4000,
        experiment={"policy": "nba", "holdout_pct": 10, "min_arm_share": 0.01},
        cadence={"every": "0s", "max_cycles": 3},
        stop={"ship_when": "never", "min_cycles": 3},
    )
    assert out.cycles == 3
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                DecisionRecord.cycle,
                DecisionRecord.profile_id,
                DecisionRecord.holdout,
                DecisionRecord.arm,
                DecisionRecord.propensity,
                DecisionRecord.expected_margin,
                DecisionRecord.model_versions,
                DecisionRecord.feature_hash,
                DecisionRecord.trace_id,
                DecisionRecord.outcome_orders,
            ).where(DecisionRecord.campaign_id == s.id)
        ).all()
        nothing_sent = conn.execute(
            select(func.count())
            .select_from(OutboxMessage)
            .join(
                DecisionRecord,
                (DecisionRecord.profile_id == OutboxMessage.profile_id)
                & (DecisionRecord.campaign_id == OutboxMessage.campaign_id)
                & (DecisionRecord.cycle == OutboxMessage.cycle),
            )
            .where(DecisionRecord.campaign_id == s.id, DecisionRecord.arm == "none")
        ).scalar()
        states = conn.execute(
            select(BanditState.state).where(BanditState.campaign_id == s.id)
        ).all()
    policy_rows = [r for r in rows if not r.holdout]
    # Every decision of the policy is logged with its exact propensity, the model versions,
    # the hash of the features it saw and the trace it ran in; doing nothing is an action.
    assert all(0 < r.propensity <= 0.9 + 1e-9 for r in policy_rows)
    assert all(r.expected_margin is not None and r.feature_hash and r.trace_id for r in policy_rows)
    assert {r.arm for r in policy_rows} >= {"none", "content@email", "ten_off@email"}
    assert nothing_sent == 0
    # Outcomes are written onto the decisions of every measured cycle.
    assert all(r.outcome_orders is not None for r in rows)
    # The residual posterior learned from each cycle's outcomes (one state per cycle).
    assert len(states) == 3 and json.loads(states[-1][0])["kind"] == "gaussian"
    # The uplift model was trained on the campaign's history, served, and named in later logs.
    registry = ModelRegistry(settings.data_dir / "models")
    meta, _ = registry.serving(model_name(s.id))
    assert meta.metrics["rows"] > 0 and meta.metrics["order_value"] > 0
    used = {r.model_versions["uplift"] for r in policy_rows if r.cycle == 3}
    assert used and "none" not in used
    assert {r.model_versions["uplift"] for r in policy_rows if r.cycle == 1} == {"none"}
    # The holdout is the CDP's stored bucket: the same person is held out in every cycle.
    with engine.begin() as conn:
        buckets = profile_buckets(conn, s.salt, sorted({r.profile_id for r in rows}))
    assert all(r.holdout == (buckets[r.profile_id] < 1000) for r in rows)
    assert all(
        c.lifts["contribution_margin"].treated_n == c.audience - c.held_out for c in out.history
    )

    # The log is complete bandit feedback: off-policy evaluation reads it as exported.
    from liftloop.loop.decision_log import export_bandit_log
    from tools.models.ope import evaluate_policy, read_decision_log, reward_table

    export = export_bandit_log(engine, s.id)
    assert len(export.rounds) == len(rows) and export.unmeasured == 0
    assert export.arms[:2] == ["holdout", "none"]
    path = settings.data_dir / "rounds.jsonl"
    path.write_text("".join(r.model_dump_json() + "\n" for r in export.rounds))
    log = read_decision_log(path)
    # Inverse-propensity weights of the holdout action average to one: the logged propensities
    # are the probabilities the assignment really had.
    held = log.actions == 0
    assert abs((held / log.propensities).mean() - 1.0) < 0.15
    always_hold = np.zeros((log.n_contexts, log.n_actions))
    always_hold[:, 0] = 1.0
    ipw = evaluate_policy(log, always_hold, reward_table(log))["ipw"].value
    holdout_mean = float(np.mean([r.reward for r in export.rounds if r.arm == "holdout"]))
    assert abs(ipw - holdout_mean) < 0.2 * max(abs(holdout_mean), 0.05)


async def test_nba_leaves_people_over_the_frequency_cap_alone(  # type: ignore[no-untyped-def]
    dev_env, settings, engine, smtp, task_queue
):
    s, _, out = await _run(
        dev_env,
        settings,
        engine,
        task_queue,
        800,
        experiment={"policy": "nba", "holdout_pct": 10},
        limits={"max_discount_pct": 15, "frequency_cap": {"per_week": 1}},
        cadence={"every": "0s", "max_cycles": 2},
        stop={"ship_when": "never", "min_cycles": 2},
    )
    assert out.cycles == 2
    with engine.connect() as conn:
        sent_first = set(
            conn.execute(
                select(OutboxMessage.profile_id).where(
                    OutboxMessage.campaign_id == s.id,
                    OutboxMessage.cycle == 1,
                    OutboxMessage.status == "sent",
                )
            ).scalars()
        )
        second = dict(
            conn.execute(
                select(DecisionRecord.profile_id, DecisionRecord.arm).where(
                    DecisionRecord.campaign_id == s.id,
                    DecisionRecord.cycle == 2,
                    DecisionRecord.holdout.is_(False),
                )
            ).all()
        )
    assert sent_first
    # One message a week: whoever got one in cycle 1 can only be left alone in cycle 2 ...
    assert {second[p] for p in sent_first if p in second} == {"none"}
    # ... while the others still get sends.
    assert any(arm != "none" for p, arm in second.items() if p not in sent_first)
