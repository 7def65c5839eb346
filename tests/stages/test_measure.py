"""MeasureStage.measure alone: lift against the holdout from hand-placed orders, outcomes on
the decisions, the stored cycle result and the stop rule."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, col
from typer.testing import CliRunner

from liftloop.cli import app
from liftloop.loop.measure import MeasureStage
from liftloop.loop.payloads import CycleRef, MeasureInput, MeasureResult
from liftloop.loop.tables import BanditState, CycleResult
from liftloop.settings import get_settings
from tests.audit_support import audit_for
from tests.stages.helpers import (
    OTHER_BATCH,
    CycleRefBuilder,
    RecordingSender,
    all_rows,
    decisions,
    outbox,
    run_decide,
    run_generate,
    run_segment,
    run_send,
    send_stage,
)
from tools.cdp.tables import Event

T0 = datetime(2030, 1, 6, 9, 0, tzinfo=UTC)
WINDOW_S = 3600.0


def _sent_cycle(env, engine, ref: CycleRef, window_start: datetime = T0) -> CycleRef:  # type: ignore[no-untyped-def]
    run_segment(env, engine, ref)
    run_decide(env, engine, ref)
    approved = [v for v in run_generate(env, engine, ref).variant_ids if "twenty_off" not in v]
    senders = {"email": RecordingSender(), "push": RecordingSender()}
    run_send(env, send_stage(engine, senders), ref, approved)
    return ref.model_copy(update={"window_start": window_start})


def _add_events(
    engine, events: list[tuple[str, str, datetime, dict[str, Any]]], tag: str = "test"
) -> None:  # type: ignore[no-untyped-def]
    with Session(engine) as session:
        for i, (pid, name, at, props) in enumerate(events):
            session.add(
                Event(
                    message_id=f"{tag}-{pid}-{i}",
                    profile_id=pid,
                    name=name,
                    occurred_at=at,
                    properties=props,
                )
            )
        session.commit()


def _order(pid: str, at: datetime, margin: float) -> tuple[str, str, datetime, dict[str, Any]]:
    return (pid, "order_completed", at, {"revenue": margin * 3, "margin": margin})


def _split(engine, ref: CycleRef) -> tuple[list[str], list[str]]:  # type: ignore[no-untyped-def]
    rows = decisions(engine, ref)
    return (
        sorted(d.profile_id for d in rows if not d.holdout),
        sorted(d.profile_id for d in rows if d.holdout),
    )


def _measure(env, engine, ref: CycleRef, true_lift=None) -> MeasureResult:  # type: ignore[no-untyped-def]
    return env.run(
        MeasureStage(engine, audit_for(engine)).measure, MeasureInput(ref=ref, true_lift=true_lift)
    )


def test_lift_and_outcomes_match_hand_computed_values(
    env, engine, cycle_ref: CycleRefBuilder
) -> None:
    ref = _sent_cycle(env, engine, cycle_ref(shards=2, window_s=WINDOW_S))
    treated, holdout = _split(engine, ref)
    assert len(treated) > 100 and len(holdout) > 10
    end = T0 + timedelta(seconds=WINDOW_S)
    in_window = T0 + timedelta(minutes=10)
    events = [_order(treated[0], T0, 10.0)]  # the window's first instant counts
    events += [_order(pid, in_window, 10.0) for pid in treated[1:12]]
    events += [_order(treated[1], in_window + timedelta(minutes=5), 5.0)]  # a second order
    events += [_order(pid, in_window, 8.0) for pid in holdout[:2]]
    # Outside the window, another event name, or nobody of the campaign: none of them count.
    events += [
        _order(treated[20], T0 - timedelta(seconds=1), 50.0),
        _order(treated[21], end, 50.0),
        (treated[22], "product_viewed", in_window, {"margin": 99.0}),
        _order(f"{OTHER_BATCH}-0", in_window, 70.0),
    ]
    _add_events(engine, events)

    result = _measure(env, engine, ref, true_lift={"conversion": 0.02})

    n_t, n_c = len(treated), len(holdout)
    sent = [r for r in outbox(engine, ref) if r.status == "sent"]
    cost = sum(ref.spec.cost_of(r.channel) for r in sent)
    conv = result.lifts["conversion"]
    assert (conv.treated_n, conv.control_n) == (n_t, n_c)
    assert conv.treated_mean == pytest.approx(12 / n_t)
    assert conv.control_mean == pytest.approx(2 / n_c)
    assert conv.estimate == pytest.approx(12 / n_t - 2 / n_c)
    assert conv.ci_low is not None and conv.ci_low < conv.estimate < conv.ci_high
    margin = result.lifts["contribution_margin"]
    assert (margin.treated_n, margin.control_n) == (n_t, n_c)
    assert margin.treated_mean == pytest.approx((12 * 10.0 + 5.0 - cost) / n_t)
    assert margin.control_mean == pytest.approx(2 * 8.0 / n_c)
    assert margin.estimate == pytest.approx((125.0 - cost) / n_t - 16.0 / n_c)
    assert (result.cycle, result.sent, result.held_out) == (1, len(sent), n_c)
    assert result.true_lift == {"conversion": 0.02}

    # Per arm: everyone assigned the arm, against the same holdout.
    arm_of = {d.profile_id: d.arm for d in decisions(engine, ref) if not d.holdout}
    converters = set(treated[:12])
    for arm, n in Counter(arm_of.values()).items():
        lift = result.per_arm[arm]["conversion"]
        assert (lift.treated_n, lift.control_n) == (n, n_c)
        hits = sum(1 for pid, a in arm_of.items() if a == arm and pid in converters)
        assert lift.treated_mean == pytest.approx(hits / n)
    assert set(result.per_arm) == set(arm_of.values())

    # The window's outcome is written onto every decision of the cycle.
    expected = {pid: (1, 10.0) for pid in treated[:12]} | {treated[1]: (2, 15.0)}
    expected |= {pid: (1, 8.0) for pid in holdout[:2]}
    for d in decisions(engine, ref):
        assert (d.outcome_orders, d.outcome_margin) == expected.get(d.profile_id, (0, 0.0))

    (stored,) = all_rows(engine, CycleResult, col(CycleResult.campaign_id) == ref.campaign_id)
    assert stored.cycle == 1 and stored.measured_at is not None
    dumped = result.model_dump(mode="json")
    assert stored.result["lifts"] == dumped["lifts"]
    assert stored.result["decision"] == result.decision
    treated_stats, control_stats = stored.result["stats"]["conversion"]
    assert (treated_stats["n"], treated_stats["sum"]) == (n_t, 12.0)
    assert (control_stats["n"], control_stats["sum"]) == (n_c, 2.0)

    # Cycle 1 of at least 3: the rule does not decide yet, whatever the estimate.
    assert (result.decision, result.decision_reason) == ("continue", "not_yet_conclusive")
    assert result.cumulative is not None and result.cumulative.sequential
    assert result.cumulative.metric == ref.spec.experiment.primary_metric
    assert (result.cumulative.treated_n, result.cumulative.control_n) == (n_t, n_c)


def test_measuring_again_replaces_the_result(env, engine, cycle_ref: CycleRefBuilder) -> None:
    ref = _sent_cycle(env, engine, cycle_ref(shards=1, window_s=WINDOW_S))
    treated, _ = _split(engine, ref)
    _add_events(engine, [_order(treated[0], T0 + timedelta(minutes=1), 4.0)])
    first = _measure(env, engine, ref)
    outcomes = sorted(
        (d.profile_id, d.outcome_orders, d.outcome_margin) for d in decisions(engine, ref)
    )
    assert _measure(env, engine, ref) == first
    assert len(all_rows(engine, CycleResult)) == 1
    assert (
        sorted((d.profile_id, d.outcome_orders, d.outcome_margin) for d in decisions(engine, ref))
        == outcomes
    )


@pytest.mark.parametrize(
    ("stop", "cycle", "who_converts", "action", "reasons"),
    [
        (
            {"ship_when": "lift_ci_low_above_zero", "min_cycles": 1},
            1,
            "treated",
            "ship",
            {"lift_ci_low_above_zero"},
        ),
        (
            {"ship_when": "lift_ci_low_above_zero", "min_cycles": 3},
            1,
            "treated",
            "continue",
            {"not_yet_conclusive"},
        ),
        (
            {"ship_when": "lift_ci_low_above_zero", "min_cycles": 3},
            3,
            "treated",
            "ship",
            {"lift_ci_low_above_zero"},
        ),
        ({"ship_when": "never", "min_cycles": 1}, 1, "treated", "continue", {"not_yet_conclusive"}),
        ({"ship_when": "never", "min_cycles": 1}, 5, "treated", "stop", {"max_cycles"}),
        # Harm stops at once, before min_cycles; unless the spec says not to.
        ({"min_cycles": 3}, 1, "holdout", "stop", {"primary_harmed", "guardrail_harmed"}),
        (
            {"min_cycles": 3, "stop_when_harmful": False},
            1,
            "holdout",
            "continue",
            {"not_yet_conclusive"},
        ),
    ],
)
def test_the_stop_rule_decides_on_the_cumulative_estimate(
    env, engine, cycle_ref: CycleRefBuilder, stop, cycle, who_converts, action, reasons
) -> None:
    ref = _sent_cycle(
        env,
        engine,
        cycle_ref(
            cycle=cycle,
            shards=1,
            window_s=WINDOW_S,
            stop=stop,
            cadence={"every": "0s", "max_cycles": 5},
            experiment={"primary_metric": "conversion"},
        ),
    )
    treated, holdout = _split(engine, ref)
    buyers = treated if who_converts == "treated" else holdout
    _add_events(engine, [_order(pid, T0 + timedelta(minutes=3), 10.0) for pid in buyers])
    result = _measure(env, engine, ref)
    assert result.decision == action and result.decision_reason in reasons
    assert result.cumulative is not None and result.cumulative.metric == "conversion"
    sign = 1 if who_converts == "treated" else -1
    assert sign * result.cumulative.estimate > 0.9


def test_cumulative_merges_earlier_cycles(env, engine, cycle_ref: CycleRefBuilder) -> None:
    one = _sent_cycle(env, engine, cycle_ref(cycle=1, shards=1, window_s=WINDOW_S))
    t1, h1 = _split(engine, one)
    _add_events(engine, [_order(pid, T0 + timedelta(minutes=5), 10.0) for pid in t1[:30]])
    first = _measure(env, engine, one)

    # Cycle 2's window starts after cycle 1's orders, so it sees none of them.
    two = _sent_cycle(
        env,
        engine,
        cycle_ref(cycle=2, shards=1, window_s=WINDOW_S),
        window_start=T0 + timedelta(hours=2),
    )
    t2, h2 = _split(engine, two)
    second = _measure(env, engine, two)
    assert second.lifts["conversion"].treated_mean == 0.0
    assert first.cumulative is not None and second.cumulative is not None
    cum = second.cumulative
    assert (cum.treated_n, cum.control_n) == (len(t1) + len(t2), len(h1) + len(h2))
    cost1 = sum(one.spec.cost_of(r.channel) for r in outbox(engine, one) if r.status == "sent")
    cost2 = sum(two.spec.cost_of(r.channel) for r in outbox(engine, two) if r.status == "sent")
    assert cum.treated_mean == pytest.approx((300.0 - cost1 - cost2) / (len(t1) + len(t2)))
    assert cum.control_mean == 0.0


def test_thompson_learns_from_the_people_sent(env, engine, cycle_ref: CycleRefBuilder) -> None:
    ref = _sent_cycle(
        env, engine, cycle_ref(shards=1, window_s=WINDOW_S, experiment={"policy": "thompson"})
    )
    treated, _ = _split(engine, ref)
    _add_events(engine, [_order(pid, T0 + timedelta(minutes=5), 10.0) for pid in treated[:40]])
    _measure(env, engine, ref)
    (state,) = all_rows(engine, BanditState, col(BanditState.campaign_id) == ref.campaign_id)
    counts = json.loads(state.state)["counts"]
    sums = json.loads(state.state)["reward_sums"]
    sent = {r.profile_id for r in outbox(engine, ref) if r.status == "sent"}
    assert sum(map(sum, counts)) == len(sent)
    assert sum(map(sum, sums)) == len(sent & set(treated[:40]))
    assert state.cycle == ref.cycle
    # The suppressed twenty_off arms learned nothing.
    arms = [a for a, _, _ in ref.spec.arms]
    for k, arm in enumerate(arms):
        if arm.startswith("twenty_off@"):
            assert all(row[k] == 0 for row in counts)
    assert any(d.outcome_orders for d in decisions(engine, ref))


def test_campaign_report_draws_the_stored_cycle_results(
    env, engine, cycle_ref: CycleRefBuilder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`liftloop campaign report` reads what the measure stage stored, cycle by cycle."""
    results, arms = [], []
    for cycle in (1, 2):
        ref = _sent_cycle(
            env,
            engine,
            cycle_ref(cycle=cycle, shards=2, window_s=WINDOW_S),
            window_start=T0 + timedelta(hours=2 * (cycle - 1)),
        )
        treated, holdout = _split(engine, ref)
        at = ref.window_start + timedelta(minutes=5)  # type: ignore[operator]
        orders = [_order(pid, at, 10.0) for pid in treated[: 20 * cycle]] + [
            _order(holdout[0], at, 6.0)
        ]
        _add_events(engine, orders, tag=f"cycle{cycle}")
        results.append(_measure(env, engine, ref))
        arms.append(Counter("holdout" if d.holdout else d.arm for d in decisions(engine, ref)))

    # The stage's engine and the command's read the same CDP file.
    monkeypatch.setenv("LIFTLOOP_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        out = tmp_path / "report"
        res = CliRunner().invoke(
            app, ["campaign", "report", ref.campaign_id, "--out", str(out), "--json"]
        )
        missing = CliRunner().invoke(app, ["campaign", "report", "nope", "--out", str(out)])
    finally:
        get_settings.cache_clear()
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["cycles"] == [1, 2] and report["metric"] == "contribution margin"
    # The lift after each cycle is the cumulative, always-valid estimate the stop rule read.
    assert report["lift"] == [
        {
            "cycle": r.cycle,
            "diff": r.cumulative.estimate,
            "ci_low": r.cumulative.ci_low,
            "ci_high": r.cumulative.ci_high,
        }
        for r in results
        if r.cumulative is not None
    ]
    assert len(report["lift"]) == 2
    assert [a["counts"] for a in report["arms"]] == [dict(c) for c in arms]
    last = results[-1]
    assert report["decision"] == {
        "action": last.decision,
        "reason": last.decision_reason,
        "cycle": 2,
        "detail": "",
    }
    assert report["html"] == str(out / "report.html")
    assert sorted(Path(c).name for c in report["charts"]) == [
        "arm_shares.png",
        "lift_over_time.png",
    ]
    page = (out / "report.html").read_text()
    latest = report["lift"][-1]
    assert f"Latest lift in contribution margin: {latest['diff']:.4g}" in page
    assert f"StopDecision after cycle 2: <strong>{last.decision}</strong>" in page
    assert page.count("data:image/png;base64,") == 2
    assert missing.exit_code == 2
    assert "campaign_id: nope: no measured cycles" in missing.stderr
